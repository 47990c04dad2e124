// `vhostwire mode [bypass|kernel]`: reads or switches the mode of a running `vhostwire serve` over its
// HTTP API (GET and PUT /api/mode). A switch is made over the unix socket (--api PATH), or over TCP
// (--url) when serve was started with --api-tcp; otherwise serve answers 403 and says so, and this exits
// 1 with that message. Like stats, it needs no addon.
import type { Argv, CommandModule, InferredOptionTypes } from 'yargs';
import { UsageError } from '../config/options';
import { answerJson, apiRequest, apiTarget, connectionOptions } from './api';

const options = connectionOptions;

type ModeArgs = InferredOptionTypes<typeof options> & { mode?: string };

export const modeCommand: CommandModule<object, ModeArgs> = {
  command: 'mode [mode]',
  describe: 'show or switch the mode of a running `vhostwire serve` (bypass: PMDs spin; kernel: idle PMDs sleep); switch over --api PATH',
  builder: (y: Argv) =>
    y
      .options(options)
      .positional('mode', { type: 'string', describe: 'bypass or kernel; omit to show the current mode' }) as unknown as Argv<ModeArgs>,
  handler: async (argv) => {
    if (argv.mode !== undefined && argv.mode !== 'bypass' && argv.mode !== 'kernel')
      throw new UsageError(`mode: must be bypass or kernel, not ${JSON.stringify(argv.mode)}`);
    const target = apiTarget(argv);
    const answer = argv.mode
      ? await apiRequest(target, 'PUT', '/api/mode', { mode: argv.mode })
      : await apiRequest(target, 'GET', '/api/mode');
    const body = answerJson<{ mode?: string; was?: string }>(answer);
    console.log(body.was && body.was !== body.mode ? `mode ${body.mode} (was ${body.was})` : `mode ${body.mode}`);
  },
};
