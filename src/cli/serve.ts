// `vhostwire serve`: the backend as a long-running process. It validates the flags, builds the
// switch, starts the API (--metrics over TCP, --api over a unix socket), then gives up what it no longer
// needs (the user with --user, every capability the ports do not need), prints what it set up and the
// port events (rate-limited: src/cli/event-log.ts), and on SIGINT/SIGTERM closes everything (sockets
// removed, threads joined) before exiting 0.
import * as fs from 'node:fs';
import type { Argv, CommandModule, InferredOptionTypes } from 'yargs';
import { buildServeConfig, DEFAULT_METRICS_PORT } from '../config/options';
import type { ServeConfig } from '../config/options';
import { portKind, portKinds } from '../ports';
import { BRIDGE_PORT_OPTIONS, BRIDGE_SYNTAX } from '../config/bridge';
import { EventLog } from './event-log';
import type { Switch } from '../switch';
import type { Api } from '../api/http';

const options = {
  wire: { type: 'string', array: true, requiresArg: true, describe: 'join two ports in both directions: A=B (repeatable)' },
  bridge: {
    type: 'string',
    array: true,
    requiresArg: true,
    describe: `a learning bridge: ${BRIDGE_SYNTAX} (repeatable; a whole bridge runs on one PMD thread); per port, on its own flag: ${BRIDGE_PORT_OPTIONS}`,
  },
  mode: { type: 'string', requiresArg: true, describe: 'bypass (PMDs spin) or kernel (idle PMDs sleep) [default: bypass]' },
  'pmd-cores': {
    type: 'string',
    requiresArg: true,
    describe: 'CPUs to pin one PMD thread each to, e.g. 1, 0,1 or 2-3 [default: one unpinned thread]',
  },
  metrics: {
    type: 'string',
    requiresArg: true,
    describe: `serve /metrics and /api/ports on HOST:PORT or PORT (host 127.0.0.1); \`vhostwire stats\` looks at ${DEFAULT_METRICS_PORT}`,
  },
  api: {
    type: 'string',
    requiresArg: true,
    describe: 'serve the API on this unix socket too (mode 0660): where changes (vhostwire mode, port add|del) are made',
  },
  'api-owner': {
    type: 'string',
    requiresArg: true,
    describe: 'owner of the --api socket: USER[:GROUP] or :GROUP [default: the user serve runs as]',
  },
  'api-group': {
    type: 'string',
    requiresArg: true,
    describe: "group of the --api socket, by name or number (members may make changes) [default: the owner's group]",
  },
  'api-tcp': { type: 'boolean', describe: 'accept changes on the --metrics listener too (from this host only; read-only without this)' },
  'api-token-file': {
    type: 'string',
    requiresArg: true,
    describe: 'with --api-tcp: changes over TCP must carry the bearer token in this file (mode 600)',
  },
  user: {
    type: 'string',
    requiresArg: true,
    describe: 'after setup, become USER[:GROUP] (needs root) and keep only the capabilities the ports need',
  },
  config: {
    type: 'string',
    requiresArg: true,
    describe: `JSON file with the same keys (${[...portKinds.map((k) => k.configKey), 'wire', 'mode', 'pmdCores', 'metrics', 'api', 'apiOwner', 'apiGroup', 'apiTcp', 'apiTokenFile', 'user'].join(', ')}); flags add to it`,
  },
} as const;

// One repeatable flag per port kind, from the kinds themselves (src/ports/).
const portOptions = Object.fromEntries(
  portKinds.map((k) => [k.flag, { type: 'string', array: true, requiresArg: true, describe: k.help } as const]),
);

type ServeArgs = InferredOptionTypes<typeof options>;

export const serveCommand: CommandModule<object, ServeArgs> = {
  command: 'serve',
  describe: 'run the backend: ports wired together by busy-poll (PMD) threads',
  builder: (y: Argv) =>
    y
      .options(portOptions)
      .options(options)
      .example('$0 serve --vhost-user vm0=/tmp/vm0.sock --vhost-user vm1=/tmp/vm1.sock --wire vm0=vm1', 'two VMs joined')
      .example(
        '$0 serve --vhost-user vm0=/tmp/vm0.sock,vlan=10 --vhost-user vm1=/tmp/vm1.sock,vlan=20 --uplink up0=eth1,trunk=10:20 --bridge br0=vm0,vm1,up0',
        'two VMs in VLANs 10 and 20 on one bridge with a trunk uplink',
      )
      .example('$0 serve --vhost-user vm0=/tmp/vm0.sock --sink s0 --wire vm0=s0 --metrics 9470', 'a VM into a sink, with metrics')
      .example('$0 serve --vhost-user vm0=/tmp/vm0.sock --uplink up0=eth1 --wire vm0=up0 --mode kernel', 'a VM on the host network')
      .example(
        '$0 serve --vhost-user vm0=/run/vhostwire/vm0.sock --sink s0 --wire vm0=s0 --api /run/vhostwire/api.sock --user vhostwire',
        'as root: set up, then run as vhostwire',
      ),
  handler: async (argv) => {
    const config = buildServeConfig({
      ports: Object.fromEntries(portKinds.map((k) => [k.flag, argv[k.flag] as string[] | undefined])),
      wire: argv.wire,
      bridge: argv.bridge,
      mode: argv.mode,
      pmdCores: argv['pmd-cores'],
      metrics: argv.metrics,
      config: argv.config,
      api: argv.api,
      apiOwner: argv['api-owner'],
      apiGroup: argv['api-group'],
      apiTcp: argv['api-tcp'],
      apiTokenFile: argv['api-token-file'],
      user: argv.user,
    });
    await serve(config);
  },
};

/** The first SIGINT/SIGTERM resolves; a second one exits at once, should closing ever hang. */
function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    let seen = false;
    const on = (sig: NodeJS.Signals): void => {
      if (seen) process.exit(130);
      seen = true;
      resolve(sig);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}

async function serve(config: ServeConfig): Promise<void> {
  const signal = untilSignal();
  // Node opens its inspector on 127.0.0.1:9229 on SIGUSR1, without authentication: whoever may signal
  // serve would hand every local user a way to run code inside it. A listener of our own replaces that.
  process.on('SIGUSR1', () => console.log('SIGUSR1: ignored (serve does not open the Node.js inspector)'));
  // Loaded here, all of it before setup: once serve has become --user, the checkout may not be readable
  // any more.
  const { Switch } = await import('../switch');
  const { createRegistry } = await import('../api/metrics');
  const { startApi } = await import('../api/http');
  const { native } = await import('../native');
  const { neededCapabilities, capabilityName } = await import('../config/privileges');
  const sw = new Switch({ mode: config.mode, pmdCores: config.pmdCores });
  const events = new EventLog();
  sw.on('connected', (e) => events.log(e.port, 'connected', 'connected'));
  sw.on('disconnected', (e) => events.log(e.port, 'disconnected', 'disconnected'));
  sw.on('ring-broken', (e) => events.log(e.port, 'ring-broken', `ring broken on vring ${e.queue} (${e.reason})`));
  sw.on('refused', (e) => events.log(e.port, 'refused', `refused: ${e.reason}`));
  sw.on('link', (e) => events.log(e.port, 'link', `link ${e.reason}`));
  sw.on('mode', (e) => console.log(`mode ${e.mode} (was ${e.was})`));

  let api: Api | undefined;
  try {
    setUp(sw, config);
    const { metrics, control } = config;
    if (metrics || control.api) {
      api = await startApi(sw, createRegistry(sw), {
        tcp: metrics ? { ...metrics, changes: control.apiTcp, token: control.apiToken } : undefined,
        unix: control.api ?? undefined,
      });
    }
    if (api?.url) {
      const changes = !control.apiTcp
        ? 'read-only'
        : control.apiToken
          ? 'changes from this host with the bearer token'
          : 'changes from any local user: --api-token-file requires a token';
      console.log(`metrics on ${api.url}/metrics, ports on ${api.url}/api/ports (${changes})`);
    }
    if (api?.path) console.log(`API on ${api.path} (mode 0660, owner ${control.api?.uid}:${control.api?.gid})`);

    const user = control.user;
    if (user) {
      // Ours to remove at close, also from a sticky directory such as /tmp, once we are this user.
      for (const p of config.ports) for (const f of portKind(p.kind).createdFiles?.(p) ?? []) fs.chownSync(f, user.uid, user.gid);
    }
    if (user || process.geteuid?.() !== 0) {
      const keep = neededCapabilities(config).map((c) => c.number);
      let r: ReturnType<typeof native.dropPrivileges>;
      try {
        r = native.dropPrivileges({ user: user ?? undefined, keep });
      } catch (e) {
        throw new Error(`dropping privileges: ${(e as Error).message}`);
      }
      const who = user ? `user ${user.name} (uid ${user.uid}, gid ${user.gid})` : `uid ${process.geteuid?.()}`;
      const kept = r.kept.length ? r.kept.map(capabilityName).join(',') : 'no capability';
      console.log(
        `privileges: ${who}; kept ${kept}, dropped every other one${r.boundingDropped ? ' (bounding set too)' : ''}; no_new_privs`,
      );
    } else {
      console.log('privileges: root with every capability (--user USER gives them up after setup; see docs/security.md)');
    }
  } catch (e) {
    await Promise.all([sw.close(), api?.close()]);
    throw e;
  }
  console.log('ready');

  const sig = await signal;
  console.log(`${sig}: closing`);
  events.flush();
  const dropped = sw.eventsDropped;
  if (dropped) console.log(`${dropped} port events were dropped before they reached JS (vhostwire_events_dropped_total)`);
  await Promise.all([sw.close(), api?.close()]);
  console.log('closed');
}

function setUp(sw: Switch, config: ServeConfig): void {
  const plural = (n: number, what: string): string => `${n} ${what}${n === 1 ? '' : 's'}`;
  const threads =
    sw.pmdCount === 1 && config.pmdCores.length === 0
      ? '1 unpinned PMD thread'
      : `${plural(sw.pmdCount, 'PMD thread')} on CPUs ${config.pmdCores.join(',')}`;
  console.log(`mode ${config.mode}, ${threads}`);
  for (const spec of config.ports) {
    sw.addPort(spec);
    console.log(`${spec.name}: ${portKind(spec.kind).summary(spec)}`);
  }
  for (const [a, b] of config.wire) {
    const w = sw.wire(a, b);
    const pmds = [...new Set(sw.ports().flatMap((p) => (p.name === a || p.name === b ? p.queuePmds : [])))].sort();
    console.log(pmds.length > 1 ? `wire ${a}=${b} on PMDs ${pmds.join(',')} (queue pairs spread)` : `wire ${a}=${b} on PMD ${w.pmd}`);
  }
  for (const br of config.bridges) {
    const members = br.members.map((port) => ({ port, ...config.bridgePorts[port] }));
    const b = sw.addBridge(br.name, br.options, members);
    console.log(`bridge ${br.name} (${br.members.join(', ')}) on PMD ${b.pmd}`);
  }
}
