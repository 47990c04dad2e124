// The Prometheus text of the counter-block families, written as bytes. They are the bulk of a scrape
// (about 50 samples per queue pair: 100,000 at 256 ports x 8 queues, 9 MB); prom-client files each sample
// under a hashed label set and formats it again on every scrape, which took 0.5 to 1 s there. Here the
// bytes before each value (a newline, the name, the labels) are laid out once per port layout in a
// template, and a scrape copies them line by line into its answer, each followed by the value read from
// the snapshot. The lines are exactly those prom-client writes for the same samples
// (test/addon/metrics-text.test.ts holds the two against each other), and prom-client keeps the registry,
// every other family and the JSON view.
import { Registry } from 'prom-client';

// prom-client's escaping (lib/registry.js): HELP text escapes backslashes and newlines, label values
// double quotes as well.
export const escapeHelp = (s: string): string => s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
const escapeLabel = (s: string): string => escapeHelp(s).replace(/"/g, '\\"');

/** `port="vm0",queue="0"`: the labels in their object order, as prom-client writes them. */
export const labelText = (labels: Record<string, string>): string =>
  Object.entries(labels)
    .map(([k, v]) => `${k}="${escapeLabel(v)}"`)
    .join(',');

/** One sample line: what comes before its value, and where the value is. */
export interface SampleLine {
  /** `name{labels} `, without the line break */
  prefix: string;
  /** word offset in the counter block */
  index: number;
  /** factor from the block's unit to the family's (1e-9 for nanoseconds exported in seconds) */
  scale: number;
}

// A value takes at most 24 characters as JavaScript writes a number (-1.2345678901234567e-308); one
// more for the line break, rounded up.
const VALUE_ROOM = 32;

/**
 * One family's text: its HELP and TYPE lines, then one line per sample, as prom-client writes them. The
 * text is written into a buffer of the writer's own, valid until its next write.
 */
export class FamilyWriter {
  readonly #head: Buffer;
  #layout: unknown = undefined;
  // The lines' template sits in the second half of the buffer and each line's bytes are copied from it
  // to where the text is written, in the first half (copyWithin: a memmove inside one buffer, no call
  // out of JavaScript per line). The first half has room for the whole text, VALUE_ROOM per value, so
  // the template is never overwritten and is laid down once per layout: twice the text's size resident
  // (about 20 MB at 256 ports x 8 queues) for no copy of it per scrape.
  #buffer = Buffer.alloc(0);
  #base = 0;
  #ends = new Uint32Array(0);
  #index = new Uint32Array(0);
  #scale = new Float64Array(0);

  constructor(name: string, help: string, type: 'counter' | 'gauge') {
    this.#head = Buffer.from(`# HELP ${name} ${escapeHelp(help)}\n# TYPE ${name} ${type}`);
  }

  /**
   * The family's text for `block`. `layout` names the arrangement of ports and queues: while it is the
   * same object, the lines are those of the last call and `lines` is not asked again.
   */
  write(layout: unknown, lines: () => SampleLine[], block: BigUint64Array): Buffer {
    if (layout !== this.#layout) this.#lay(layout, lines());
    const out = this.#buffer;
    const base = this.#base;
    let o = this.#head.length;
    let from = base;
    for (let i = 0; i < this.#index.length; i++) {
      const to = base + this.#ends[i];
      out.copyWithin(o, from, to);
      o += to - from;
      from = to;
      const v = block[this.#index[i]];
      if (v === 0n) out[o++] = 0x30;
      else {
        const s = String(Number(v) * this.#scale[i]);
        for (let j = 0; j < s.length; j++) out[o++] = s.charCodeAt(j);
      }
    }
    return out.subarray(0, o);
  }

  #lay(layout: unknown, lines: SampleLine[]): void {
    const template = Buffer.from(lines.map((l) => `\n${l.prefix}`).join(''));
    this.#base = this.#head.length + template.length + VALUE_ROOM * lines.length;
    this.#buffer = Buffer.alloc(this.#base + template.length);
    this.#head.copy(this.#buffer, 0);
    template.copy(this.#buffer, this.#base);
    this.#ends = new Uint32Array(lines.length);
    let end = 0;
    lines.forEach((l, i) => (this.#ends[i] = end += Buffer.byteLength(l.prefix) + 1));
    this.#index = Uint32Array.from(lines, (l) => l.index);
    this.#scale = Float64Array.from(lines, (l) => l.scale);
    this.#layout = layout;
  }
}

const SEPARATOR = Buffer.from('\n\n');
const END = Buffer.from('\n');

/**
 * A registry whose families may have writers of their own (the counter-block families): its Prometheus
 * text takes those families from their writers and every other one from prom-client, in registration
 * order and joined as prom-client joins them. Every family is started in one synchronous pass, as
 * prom-client does, so they all read one snapshot of the block. The OpenMetrics format stays prom-client's.
 */
export class CounterBlockRegistry extends Registry {
  readonly #writers = new Map<string, () => Buffer>();
  // One text at a time: the writers' buffers hold their text only until their next write, so a scrape
  // asked for while one is being put together starts once that one's parts are copied into its answer.
  // One asked for with none under way starts at once, in the caller's synchronous pass.
  #busy: Promise<void> | null = null;

  /**
   * `write` gives the family's text in place of prom-client's formatting of the metric of that name; what
   * it returns may be overwritten by its next call.
   */
  writeFamily(name: string, write: () => Buffer): void {
    this.#writers.set(name, write);
  }

  /** The Prometheus text as bytes, as GET /metrics sends it. */
  metricsBuffer(): Promise<Buffer> {
    const text = this.#busy ? this.#busy.then(() => this.#text()) : this.#text();
    const done: Promise<void> = text.then(
      () => this.#settled(done),
      () => this.#settled(done),
    );
    this.#busy = done;
    return text;
  }

  #settled(done: Promise<void>): void {
    if (this.#busy === done) this.#busy = null;
  }

  async #text(): Promise<Buffer> {
    if (this.contentType !== Registry.PROMETHEUS_CONTENT_TYPE) return Buffer.from(await super.metrics());
    const texts = this.getMetricsAsArray().map((m) => this.#writers.get(m.name)?.() ?? this.getSingleMetricAsString(m.name));
    const parts: Buffer[] = [];
    for (const t of await Promise.all(texts)) {
      if (parts.length) parts.push(SEPARATOR);
      parts.push(typeof t === 'string' ? Buffer.from(t) : t);
    }
    parts.push(END);
    return Buffer.concat(parts);
  }

  override async metrics(): Promise<string> {
    if (this.contentType !== Registry.PROMETHEUS_CONTENT_TYPE) return super.metrics();
    return (await this.metricsBuffer()).toString('utf8');
  }
}

/** What GET /metrics answers: our registry's bytes as they are written, any other registry's text. */
export function exposition(registry: Registry): Promise<string | Buffer> {
  return registry instanceof CounterBlockRegistry ? registry.metricsBuffer() : registry.metrics();
}
