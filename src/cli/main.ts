// The `vhostwire` command line. Every command reports bad input as one line on stderr,
// `vhostwire <command>: <message>`, and exits 2; other failures exit 1.
import yargs from 'yargs';
import type { Argv, CommandModule } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { UsageError } from '../config/options';
import { demoCommand } from './demo';
import { peerCommand } from './peer';
import { portCommand } from './port';
import { serveCommand } from './serve';
import { statsCommand } from './stats';
import { modeCommand } from './mode';
import { fdbCommand } from './fdb';
import { vmCommand } from './vm';

// The command yargs matched, so failures can say whose they are; set when its builder runs, which
// is before yargs validates the command's flags.
let current = '';

function named<U>(m: CommandModule<object, U>): CommandModule<object, U> {
  const builder = m.builder as (y: Argv) => Argv<U>;
  return {
    ...m,
    builder: (y: Argv) => {
      current = String(m.command);
      return builder(y);
    },
  };
}

function fail(message: string, code: number): never {
  console.error(`vhostwire${current ? ` ${current}` : ''}: ${message}`);
  process.exit(code);
}

function runtimeMessage(err: Error | undefined): string {
  if (err === undefined) return 'failed';
  if ((err as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND' && /vhostwire(_frontend)?\.node/.test(err.message))
    return 'the native addon is not built (run npm ci, or npx node-gyp rebuild)';
  // First line only: require errors append their whole require stack.
  return err.message.split('\n')[0];
}

yargs(hideBin(process.argv))
  .scriptName('vhostwire')
  .usage('$0 <command> [options]\n\nA vhost-user virtio-net backend with busy-poll data path threads.')
  .command(named(serveCommand))
  .command(named(peerCommand))
  .command(named(demoCommand))
  .command(named(statsCommand))
  .command(named(modeCommand))
  .command(named(fdbCommand))
  .command(named(vmCommand))
  .command(named(portCommand))
  .demandCommand(1, 'name a command: serve, peer, demo, stats, mode, port, fdb or vm (see --help)')
  .strict()
  // `--sink a b` is a typo for `--sink a --sink b`, not two sinks: arrays take one value per flag.
  .parserConfiguration({ 'greedy-arrays': false })
  .help()
  .alias('h', 'help')
  .version()
  .wrap(120)
  .fail((msg: string | null, err: Error | undefined) => {
    // yargs reports its own validation failures with a message; a rejected handler comes with
    // msg null and the error, which is bad input only when it is a UsageError.
    if (msg !== null || err instanceof UsageError) fail(msg ?? err!.message, 2);
    fail(runtimeMessage(err), 1);
  })
  .parseAsync()
  .then(() => process.exit());
