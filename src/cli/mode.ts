// `vhostwire mode [bypass|kernel]`: reads or switches the mode of a running `vhostwire serve --metrics`
// over its HTTP API (PUT /api/mode, accepted from this host only). Like stats, it needs no addon.
import type { Argv, CommandModule, InferredOptionTypes } from 'yargs';
import { UsageError } from '../config/options';
import { apiUrl, request, urlOption } from './api';

const options = urlOption;

type ModeArgs = InferredOptionTypes<typeof options> & { mode?: string };

export const modeCommand: CommandModule<object, ModeArgs> = {
  command: 'mode [mode]',
  describe: 'show or switch the mode of a running `vhostwire serve --metrics ...` (bypass: PMDs spin; kernel: idle PMDs sleep)',
  builder: (y: Argv) =>
    y.options(options).positional('mode', { type: 'string', describe: 'bypass or kernel; omit to show the current mode' }) as unknown as Argv<ModeArgs>,
  handler: async (argv) => {
    if (argv.mode !== undefined && argv.mode !== 'bypass' && argv.mode !== 'kernel')
      throw new UsageError(`mode: must be bypass or kernel, not ${JSON.stringify(argv.mode)}`);
    const url = apiUrl(argv.url, '/api/mode');
    const init: RequestInit = argv.mode
      ? { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ mode: argv.mode }) }
      : {};
    const res = await request(url, init);
    const body = (await res.json().catch(() => ({}))) as { mode?: string; was?: string; error?: string };
    if (!res.ok) throw new Error(`${url.href}: HTTP ${res.status}: ${body.error ?? 'no reason given'}`);
    console.log(body.was && body.was !== body.mode ? `mode ${body.mode} (was ${body.was})` : `mode ${body.mode}`);
  },
};
