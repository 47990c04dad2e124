// `vhostwire fdb BRIDGE`: the MAC table of one bridge of a running `vhostwire serve`, read over its HTTP
// API (GET /api/bridges/NAME/fdb) from --api PATH or --url. One line per entry: MAC, VLAN, port, age in
// seconds, and "static" for entries that never age. Like stats, it needs no addon.
import type { Argv, CommandModule, InferredOptionTypes } from 'yargs';
import type { FdbJson } from '../api/http';
import { answerJson, apiRequest, apiTarget, connectionOptions } from './api';

const options = connectionOptions;

type FdbArgs = InferredOptionTypes<typeof options> & { bridge: string };

export function formatFdb(rows: FdbJson[]): string {
  const table = [
    ['MAC', 'VLAN', 'PORT', 'AGE'],
    ...rows.map((r) => [r.mac, String(r.vlan), r.port, r.static ? 'static' : `${r.ageSeconds}s`]),
  ];
  const widths = table[0].map((_, c) => Math.max(...table.map((row) => row[c].length)));
  return table
    .map((row) =>
      row
        .map((cell, c) => cell.padEnd(widths[c]))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export const fdbCommand: CommandModule<object, FdbArgs> = {
  command: 'fdb <bridge>',
  describe: 'show the MAC table of a bridge of a running `vhostwire serve`: MAC, VLAN, port, age (static entries marked)',
  builder: (y: Argv) =>
    y.options(options).positional('bridge', {
      type: 'string',
      demandOption: true,
      describe: 'the bridge, as named by serve --bridge NAME=...',
    }) as unknown as Argv<FdbArgs>,
  handler: async (argv) => {
    const answer = await apiRequest(apiTarget(argv), 'GET', `/api/bridges/${encodeURIComponent(argv.bridge)}/fdb`);
    const rows = answerJson<FdbJson[]>(answer);
    console.log(formatFdb(rows));
    console.log(`${rows.length} ${rows.length === 1 ? 'entry' : 'entries'}`);
  },
};
