// The rate limit on serve's event lines (src/cli/event-log.ts), on a clock and timers of our own.
import t from 'tap';
import { EventLog } from '../../src/cli/event-log';

function stage(perSecond = 3) {
  let now = 1_000_000;
  const lines: string[] = [];
  const timers: { at: number; fn: () => void; cancelled: boolean }[] = [];
  const log = new EventLog({
    perSecond,
    print: (l) => lines.push(l),
    now: () => now,
    schedule: (fn, ms) => {
      const timer = { at: now + ms, fn, cancelled: false };
      timers.push(timer);
      return { cancel: () => (timer.cancelled = true) };
    },
  });
  /** Moves the clock and fires the timers that are due. */
  const advance = (ms: number, fire = true): void => {
    now += ms;
    if (!fire) return;
    for (const x of timers.filter((x) => !x.cancelled && x.at <= now)) {
      x.cancelled = true;
      x.fn();
    }
  };
  return { log, lines, advance, pending: () => timers.filter((x) => !x.cancelled).length };
}

t.test('at most perSecond lines per port and kind per window, then one summary when the window ends', async (t) => {
  const s = stage(3);
  for (let i = 0; i < 1000; i++) s.log.log('vm0', 'refused', `refused: message ${i}`);
  t.same(s.lines, ['vm0: refused: message 0', 'vm0: refused: message 1', 'vm0: refused: message 2'], 'the first three, then nothing');
  t.equal(s.pending(), 1, 'one timer for the summary, not one per event');
  s.advance(999);
  t.equal(s.lines.length, 3, 'nothing before the window ends');
  s.advance(1);
  t.equal(s.lines.at(-1), 'vm0: 997 similar refused events suppressed in the last 1.0 s', 'the summary counts every line held back');
  s.log.log('vm0', 'refused', 'refused: later');
  t.equal(s.lines.at(-1), 'vm0: refused: later', 'a new window prints again');
});

t.test('ports and kinds are limited separately', async (t) => {
  const s = stage(2);
  for (let i = 0; i < 5; i++) {
    s.log.log('vm0', 'refused', 'r');
    s.log.log('vm1', 'refused', 'r');
    s.log.log('vm0', 'connected', 'connected');
  }
  t.equal(s.lines.filter((l) => l === 'vm0: r').length, 2);
  t.equal(s.lines.filter((l) => l === 'vm1: r').length, 2);
  t.equal(s.lines.filter((l) => l === 'vm0: connected').length, 2, 'a refusal flood on vm0 does not hide its other events');
  s.log.flush();
  t.same(
    s.lines.slice(6).sort(),
    [
      'vm0: 3 similar connected events suppressed in the last 0.0 s',
      'vm0: 3 similar refused events suppressed in the last 0.0 s',
      'vm1: 3 similar refused events suppressed in the last 0.0 s',
    ],
    'flush says what each held back',
  );
  t.equal(s.pending(), 0, 'and cancels the timers');
});

t.test('a window that held nothing back ends silently, and an event after it starts a new one', async (t) => {
  const s = stage(3);
  s.log.log('vm0', 'disconnected', 'disconnected');
  s.advance(5000);
  s.log.log('vm0', 'disconnected', 'disconnected');
  t.same(s.lines, ['vm0: disconnected', 'vm0: disconnected']);
  t.equal(s.pending(), 0, 'no timer without anything held back');
});

t.test('the summary comes with the next event when the window passed before its timer ran', async (t) => {
  const s = stage(1);
  s.log.log('vm0', 'refused', 'a');
  s.log.log('vm0', 'refused', 'b');
  s.log.log('vm0', 'refused', 'c');
  // A busy event loop: the clock moves past the window, the timer has not run yet.
  s.advance(1500, false);
  s.log.log('vm0', 'refused', 'd');
  t.same(s.lines, ['vm0: a', 'vm0: 2 similar refused events suppressed in the last 1.5 s', 'vm0: d']);
  s.advance(0);
  t.equal(s.lines.length, 3, 'the old timer, cancelled, says nothing twice');
  t.equal(s.pending(), 0);
});
