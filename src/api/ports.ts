// Ports added and removed while the switch runs: POST /api/ports and DELETE /api/ports/NAME (what
// `vhostwire port add|del` sends). A new port is described in the serve flags' own syntax, parsed by its
// kind (src/ports/), so a spec that serve takes is taken here and one it refuses is refused with the same
// message. The answers: 400 for a bad request (the message names the port and what to fix), 404 for a
// port that does not exist, 409 for a name or resource (socket path, interface) that is already taken.
import { UsageError } from '../config/options';
import { splitBridgePortOptions, type BridgePortFields } from '../config/bridge';
import { checkName } from '../config/parse';
import { portKind, type AnyPortSpec } from '../ports';
import { SwitchError, type Switch } from '../switch';

export interface PortAnswer {
  status: number;
  body: unknown;
}

/** The kinds a port can be added as at run time: what has a serve flag of its own for a VM or a host. */
const ADDABLE = ['vhost-user', 'uplink'];
const BODY_KEYS = ['kind', 'spec', 'wire', 'bridge', 'vlan', 'trunk', 'mac'];

export interface AddPortContext {
  sw: Switch;
  /** socket paths the switch itself holds (the --api socket), which no port may take */
  reserved: readonly string[];
}

const error = (status: number, message: string): PortAnswer => ({ status, body: { error: message } });

/** Where a new port goes on a bridge: the bridge's name and how the port sits in it, or an answer refusing it. */
interface Membership {
  bridge: string;
  fields: BridgePortFields;
}

/**
 * The bridge options of a new port: `bridge`, with `vlan`, `trunk` and `mac` from the body and any of the
 * serve flag's own per-port options (vlan=, trunk=, native=, mac=, learning=...) left in `spec`. Both are
 * read by the serve flag's parser, so the API takes and refuses exactly what serve does.
 */
function bridgeMembership(
  sw: Switch,
  name: string,
  b: Record<string, unknown>,
  fromSpec: BridgePortFields | null,
): Membership | PortAnswer | null {
  const extra: string[] = [];
  if (b.vlan !== undefined) extra.push(`vlan=${String(b.vlan)}`);
  if (b.trunk !== undefined) extra.push(`trunk=${String(b.trunk)}`);
  if (b.mac !== undefined) extra.push(`mac=${String(b.mac)}`);
  let fields: BridgePortFields | null = fromSpec;
  if (extra.length > 0) {
    try {
      const [, fromBody] = splitBridgePortOptions(`port "${name}"`, [name, ...extra].join(','));
      fields = { ...fromSpec, ...fromBody };
    } catch (e) {
      return error(400, (e as Error).message);
    }
  }
  if (b.bridge === undefined) {
    if (fields === null) return null;
    return error(400, `port "${name}": vlan, trunk, mac and the other bridge options need "bridge": the bridge to join`);
  }
  if (typeof b.bridge !== 'string') return error(400, `port "${name}": "bridge" must be the name of a bridge`);
  if (b.wire !== undefined) return error(400, `port "${name}": a port is in one wire or one bridge, not both`);
  const bridge = b.bridge;
  if (!sw.bridges().some((x) => x.name === bridge)) return error(404, `port "${name}": bridge: there is no bridge named "${bridge}"`);
  return { bridge, fields: fields ?? {} };
}

function statusOf(e: unknown): number {
  if (e instanceof SwitchError) return e.code === 'EEXIST' || e.code === 'EBUSY' ? 409 : e.code === 'ENOENT' ? 404 : 400;
  return e instanceof UsageError ? 400 : 500;
}

export function addPort({ sw, reserved }: AddPortContext, body: unknown): PortAnswer {
  if (body === null || typeof body !== 'object' || Array.isArray(body))
    return error(400, `the body must be a JSON object such as {"kind": "vhost-user", "spec": "vm3=/tmp/vm3.sock"}`);
  const b = body as Record<string, unknown>;
  const unknown = Object.keys(b).filter((k) => !BODY_KEYS.includes(k));
  if (unknown.length > 0) return error(400, `unknown key ${unknown.join(', ')} (a port takes ${BODY_KEYS.join(', ')})`);
  if (typeof b.kind !== 'string' || !ADDABLE.includes(b.kind))
    return error(400, `"kind" must be ${ADDABLE.map((k) => `"${k}"`).join(' or ')}, not ${JSON.stringify(b.kind)}`);
  if (typeof b.spec !== 'string') return error(400, `"spec" must be a string such as "vm3=/tmp/vm3.sock,queues=2"`);
  if (b.wire !== undefined && typeof b.wire !== 'string') return error(400, `"wire" must be the name of a port`);
  let spec: AnyPortSpec;
  let specText: string;
  let fromSpec: BridgePortFields | null;
  let wire: string | undefined;
  try {
    [specText, fromSpec] = splitBridgePortOptions(`port spec "${b.spec}"`, b.spec);
    spec = portKind(b.kind).parseFlag(specText) as AnyPortSpec;
    if (b.wire !== undefined) wire = checkName(`port "${spec.name}": wire`, b.wire);
  } catch (e) {
    return error(statusOf(e), (e as Error).message);
  }
  const member = bridgeMembership(sw, spec.name, b, fromSpec);
  if (member !== null && 'status' in member) return member;
  const held = portKind(spec.kind).exclusive?.(spec);
  if (held && reserved.includes(held.value))
    return error(409, `port "${spec.name}": ${held.what} ${held.value} is the switch's own API socket`);
  if (wire !== undefined && !sw.hasPort(wire)) return error(404, `port "${spec.name}": wire: there is no port named "${wire}"`);
  if (wire === spec.name) return error(400, `port "${spec.name}": cannot wire a port to itself`);
  try {
    sw.addPort(spec);
  } catch (e) {
    return error(statusOf(e), (e as Error).message);
  }
  if (member !== null) {
    try {
      sw.bridgeAddPort(member.bridge, { port: spec.name, ...member.fields });
      return { status: 201, body: { name: spec.name, kind: spec.kind, bridge: member.bridge } };
    } catch (e) {
      sw.removePort(spec.name);
      return error(409, `port "${spec.name}" was not added: ${(e as Error).message}`);
    }
  }
  if (wire === undefined) return { status: 201, body: { name: spec.name, kind: spec.kind } };
  try {
    const w = sw.wire(spec.name, wire);
    return { status: 201, body: { name: spec.name, kind: spec.kind, wire: wire, pmd: w.pmd } };
  } catch (e) {
    // A port that was asked for in a wire (or a bridge, above) and could not join it is not left behind
    // half-configured.
    sw.removePort(spec.name);
    return error(409, `port "${spec.name}" was not added: ${(e as Error).message}`);
  }
}

/** Takes the port out of its wire or bridge, then removes it; a connected front end sees its socket closed. */
export function deletePort(sw: Switch, name: string): PortAnswer {
  try {
    sw.removePort(name);
  } catch (e) {
    return error(statusOf(e), (e as Error).message);
  }
  return { status: 200, body: { name, removed: true } };
}
