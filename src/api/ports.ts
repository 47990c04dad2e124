// Ports added and removed while the switch runs: POST /api/ports and DELETE /api/ports/NAME (what
// `vhostwire port add|del` sends). A new port is described in the serve flags' own syntax, parsed by its
// kind (src/ports/), so a spec that serve takes is taken here and one it refuses is refused with the same
// message. The answers: 400 for a bad request (the message names the port and what to fix), 404 for a
// port that does not exist, 409 for a name or resource (socket path, interface) that is already taken.
import { UsageError } from '../config/options';
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

/**
 * The bridge options of a new port (bridge, vlan, trunk, mac). This build has no bridge: any of them is
 * refused, so a client written for a bridge learns it at once instead of getting a port that is on none.
 */
function bridgeMembership(name: string, body: Record<string, unknown>): PortAnswer | null {
  const given = ['bridge', 'vlan', 'trunk', 'mac'].filter((k) => body[k] !== undefined);
  if (given.length === 0) return null;
  return error(400, `port "${name}": ${given.join(', ')}: bridges are not supported by this build (use "wire" to join two ports)`);
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
  let wire: string | undefined;
  try {
    spec = portKind(b.kind).parseFlag(b.spec) as AnyPortSpec;
    if (b.wire !== undefined) wire = checkName(`port "${spec.name}": wire`, b.wire);
  } catch (e) {
    return error(statusOf(e), (e as Error).message);
  }
  const bridged = bridgeMembership(spec.name, b);
  if (bridged) return bridged;
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
  if (wire === undefined) return { status: 201, body: { name: spec.name, kind: spec.kind } };
  try {
    const w = sw.wire(spec.name, wire);
    return { status: 201, body: { name: spec.name, kind: spec.kind, wire: wire, pmd: w.pmd } };
  } catch (e) {
    // A port that was asked for in a wire and could not join it is not left behind half-configured.
    sw.removePort(spec.name);
    return error(409, `port "${spec.name}" was not added: ${(e as Error).message}`);
  }
}

/** Takes the port out of its wire, then removes it; a connected front end sees its socket closed. */
export function deletePort(sw: Switch, name: string): PortAnswer {
  try {
    sw.removePort(name);
  } catch (e) {
    return error(statusOf(e), (e as Error).message);
  }
  return { status: 200, body: { name, removed: true } };
}
