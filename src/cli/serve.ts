// `vhostwire serve`: the backend as a long-running process. It validates the flags, builds the
// switch, serves metrics if asked, prints what it set up and every port event, and on SIGINT/SIGTERM
// closes everything (sockets removed, threads joined) before exiting 0.
import type { Argv, CommandModule, InferredOptionTypes } from 'yargs';
import { buildServeConfig, DEFAULT_METRICS_PORT } from '../config/options';
import type { ServeConfig } from '../config/options';
import { portKind, portKinds } from '../ports';
import { Switch } from '../switch';
import type { HttpServer } from '../api/http';

const options = {
  wire: { type: 'string', array: true, requiresArg: true, describe: 'join two ports in both directions: A=B (repeatable)' },
  mode: { type: 'string', requiresArg: true, describe: 'bypass (PMDs spin) or kernel (idle PMDs sleep) [default: bypass]' },
  'pmd-cores': { type: 'string', requiresArg: true, describe: 'CPUs to pin one PMD thread each to, e.g. 1, 0,1 or 2-3 [default: one unpinned thread]' },
  metrics: {
    type: 'string',
    requiresArg: true,
    describe: `serve /metrics and /api/ports on HOST:PORT or PORT (host 127.0.0.1); \`vhostwire stats\` looks at ${DEFAULT_METRICS_PORT}`,
  },
  config: {
    type: 'string',
    requiresArg: true,
    describe: `JSON file with the same keys (${[...portKinds.map((k) => k.configKey), 'wire', 'mode', 'pmdCores', 'metrics'].join(', ')}); flags add to it`,
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
      .example('$0 serve --vhost-user vm0=/tmp/vm0.sock --sink s0 --wire vm0=s0 --metrics 9470', 'a VM into a sink, with metrics')
      .example('$0 serve --vhost-user vm0=/tmp/vm0.sock --uplink up0=eth1 --wire vm0=up0 --mode kernel', 'a VM on the host network'),
  handler: async (argv) => {
    const config = buildServeConfig({
      ports: Object.fromEntries(portKinds.map((k) => [k.flag, argv[k.flag] as string[] | undefined])),
      wire: argv.wire,
      mode: argv.mode,
      pmdCores: argv['pmd-cores'],
      metrics: argv.metrics,
      config: argv.config,
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
  const sw = new Switch({ mode: config.mode, pmdCores: config.pmdCores });
  sw.on('connected', (e) => console.log(`${e.port}: connected`));
  sw.on('disconnected', (e) => console.log(`${e.port}: disconnected`));
  sw.on('ring-broken', (e) => console.log(`${e.port}: ring broken on vring ${e.queue} (${e.reason})`));
  sw.on('error', (e) => console.log(`${e.port}: error: ${e.reason}`));
  sw.on('mode', (e) => console.log(`mode ${e.mode} (was ${e.was})`));

  let server: HttpServer | undefined;
  try {
    setUp(sw, config);
    if (config.metrics) {
      const { createRegistry } = await import('../api/metrics');
      const { startHttp } = await import('../api/http');
      server = await startHttp(sw, createRegistry(sw), config.metrics.host, config.metrics.port);
      console.log(`metrics on ${server.url}/metrics, ports on ${server.url}/api/ports`);
    }
  } catch (e) {
    await sw.close();
    throw e;
  }
  console.log('ready');

  const sig = await signal;
  console.log(`${sig}: closing`);
  await Promise.all([sw.close(), server?.close()]);
  console.log('closed');
}

function setUp(sw: Switch, config: ServeConfig): void {
  const plural = (n: number, what: string): string => `${n} ${what}${n === 1 ? '' : 's'}`;
  const threads = sw.pmdCount === 1 && config.pmdCores.length === 0 ? '1 unpinned PMD thread' : `${plural(sw.pmdCount, 'PMD thread')} on CPUs ${config.pmdCores.join(',')}`;
  console.log(`mode ${config.mode}, ${threads}`);
  for (const spec of config.ports) {
    sw.addPort(spec);
    console.log(`${spec.name}: ${portKind(spec.kind).summary(spec)}`);
  }
  for (const [a, b] of config.wire) {
    const w = sw.wire(a, b);
    console.log(`wire ${a}=${b} on PMD ${w.pmd}`);
  }
}
