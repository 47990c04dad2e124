// Port events as log lines, at most `perSecond` lines per port and kind in any one-second window. A
// front end can cause events as fast as it can send messages or open connections; logging each one
// would turn a flood into disk and CPU spent on the log. What is held back is said in one line when
// its window ends: "vm0: 5210 similar refused events suppressed in the last 1.0 s".

export interface EventLogOptions {
  /** Lines per port and kind per window (default 10). */
  perSecond?: number;
  /** Where lines go (default console.log). */
  print?: (line: string) => void;
  /** Clock and timer, for tests; the timer must not keep the process alive. */
  now?: () => number;
  schedule?: (fn: () => void, ms: number) => { cancel(): void };
}

interface Window {
  start: number;
  printed: number;
  suppressed: number;
  timer?: { cancel(): void };
}

const WINDOW_MS = 1000;

function unrefTimer(fn: () => void, ms: number): { cancel(): void } {
  const t = setTimeout(fn, ms);
  t.unref();
  return { cancel: () => clearTimeout(t) };
}

export class EventLog {
  readonly #perSecond: number;
  readonly #print: (line: string) => void;
  readonly #now: () => number;
  readonly #schedule: (fn: () => void, ms: number) => { cancel(): void };
  // One entry per port and kind that logged in its current window; ports and kinds are few.
  readonly #windows = new Map<string, Window>();

  constructor(o: EventLogOptions = {}) {
    this.#perSecond = o.perSecond ?? 10;
    this.#print = o.print ?? ((l) => console.log(l));
    this.#now = o.now ?? Date.now;
    this.#schedule = o.schedule ?? unrefTimer;
  }

  /** Prints `${port}: ${text}`, unless this port and kind already printed perSecond lines in this window. */
  log(port: string, kind: string, text: string): void {
    const key = `${port}\0${kind}`;
    const now = this.#now();
    let w = this.#windows.get(key);
    if (w && now - w.start >= WINDOW_MS) {
      this.#end(key, w, now);
      w = undefined;
    }
    if (!w) {
      w = { start: now, printed: 0, suppressed: 0 };
      this.#windows.set(key, w);
    }
    if (w.printed < this.#perSecond) {
      w.printed++;
      this.#print(`${port}: ${text}`);
      return;
    }
    w.suppressed++;
    // The summary must come when the flood stops too, not only with the next event.
    const win = w;
    win.timer ??= this.#schedule(
      () => {
        if (this.#windows.get(key) === win) this.#end(key, win, this.#now());
      },
      win.start + WINDOW_MS - now,
    );
  }

  /** Says what is held back now (at close). */
  flush(): void {
    const now = this.#now();
    for (const [key, w] of [...this.#windows]) this.#end(key, w, now);
  }

  #end(key: string, w: Window, now: number): void {
    w.timer?.cancel();
    this.#windows.delete(key);
    if (w.suppressed === 0) return;
    const [port, kind] = key.split('\0');
    const secs = Math.max(now - w.start, 0) / 1000;
    this.#print(
      `${port}: ${w.suppressed} similar ${kind} event${w.suppressed === 1 ? '' : 's'} suppressed in the last ${secs.toFixed(1)} s`,
    );
  }
}
