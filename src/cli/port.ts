// `vhostwire port add|del|list`: the ports of a running `vhostwire serve`, changed while it runs, over its
// HTTP API (POST /api/ports, DELETE /api/ports/NAME, GET /api/ports; src/api/ports.ts). A port is given in
// the serve flags' own syntax and checked by serve, which answers with what was wrong; this exits 1 with
// that message. Changes go over the unix socket (--api PATH), or over TCP (--url) when serve allows it.
import type { Argv, CommandModule, InferredOptionTypes } from 'yargs';
import type { PortJson } from '../api/http';
import { answerJson, apiRequest, apiTarget, connectionOptions, type ConnectionFlags } from './api';
import { table } from './format';

const addOptions = {
  ...connectionOptions,
  uplink: { type: 'boolean', describe: 'the spec is an uplink (NAME=IFNAME[,...], as serve --uplink) [default: vhost-user]' },
  wire: { type: 'string', requiresArg: true, describe: 'join the new port to this existing port in both directions' },
  bridge: { type: 'string', requiresArg: true, describe: 'put the new port on this bridge' },
  vlan: { type: 'number', requiresArg: true, describe: 'access VLAN of the new port on its bridge' },
  trunk: { type: 'string', requiresArg: true, describe: 'VLANs the new port carries tagged on its bridge, e.g. 10:20:100-199' },
  mac: { type: 'string', requiresArg: true, describe: 'the only source MAC the new port admits' },
} as const;

type AddArgs = InferredOptionTypes<typeof addOptions> & { spec: string };
type DelArgs = InferredOptionTypes<typeof connectionOptions> & { name: string };

const addCommand: CommandModule<object, AddArgs> = {
  command: 'add <spec>',
  describe: 'add a port: NAME=PATH[,queues=N,...] as serve --vhost-user, or with --uplink as serve --uplink',
  builder: (y: Argv) =>
    y
      .options(addOptions)
      .positional('spec', { type: 'string', describe: 'the port, in the syntax of its serve flag' }) as unknown as Argv<AddArgs>,
  handler: async (argv) => {
    const body = {
      kind: argv.uplink ? 'uplink' : 'vhost-user',
      spec: argv.spec,
      wire: argv.wire,
      bridge: argv.bridge,
      vlan: argv.vlan,
      trunk: argv.trunk,
      mac: argv.mac,
    };
    const added = answerJson<{ name: string; kind: string; wire?: string; pmd?: number }>(
      await apiRequest(apiTarget(argv), 'POST', '/api/ports', body),
    );
    console.log(`${added.name}: added (${added.kind})${added.wire ? `, wired to ${added.wire} on PMD ${added.pmd}` : ''}`);
  },
};

const delCommand: CommandModule<object, DelArgs> = {
  command: 'del <name>',
  describe: 'remove a port: out of its wire first, a connected front end disconnected',
  builder: (y: Argv) =>
    y.options(connectionOptions).positional('name', { type: 'string', describe: 'the port' }) as unknown as Argv<DelArgs>,
  handler: async (argv) => {
    answerJson(await apiRequest(apiTarget(argv), 'DELETE', `/api/ports/${encodeURIComponent(argv.name)}`));
    console.log(`${argv.name}: removed`);
  },
};

const listCommand: CommandModule<object, ConnectionFlags> = {
  command: 'list',
  describe: 'list the ports: kind, state, queue pairs, the port each is wired to',
  builder: (y: Argv) => y.options(connectionOptions),
  handler: async (argv) => {
    const ports = answerJson<PortJson[]>(await apiRequest(apiTarget(argv), 'GET', '/api/ports'));
    const rows = [['PORT', 'KIND', 'STATE', 'QUEUES', 'PEER', 'WHERE']];
    for (const p of ports) rows.push([p.name, p.kind, p.state, String(p.queuePairs), p.peer || '-', String(p.path ?? p.ifname ?? '-')]);
    console.log(table(rows));
  },
};

export const portCommand: CommandModule<object, object> = {
  command: 'port',
  describe: 'add, remove or list the ports of a running `vhostwire serve` (--api PATH or --url URL)',
  builder: (y: Argv) =>
    y
      .command(addCommand)
      .command(delCommand)
      .command(listCommand)
      .demandCommand(1, 'name a port command: add, del or list')
      .example('$0 port add vm3=/tmp/vm3.sock,queues=2 --wire up0 --api /run/vhostwire.sock', 'a VM port joined to up0')
      .example('$0 port del vm3 --api /run/vhostwire.sock', 'remove it again'),
  handler: () => undefined,
};
