// Generator ports: frames of one size at a given rate, as a NIC's receive would produce them
// (addon/ports/test/).
import {
  checkName,
  checkRange,
  configObject,
  configString,
  configUint,
  fail,
  flagWhere,
  limits,
  parseOptions,
  parseUint,
} from '../config/parse';
import type { PortKind } from './kind';

export interface GenSpec {
  kind: 'gen';
  name: string;
  /** frame bytes */
  size: number;
  /** packets per second, 0 = unlimited */
  rate: number;
  /** packets in total, 0 = unlimited */
  count: number;
  /** source MACs cycled through, one per frame (absent: one); what a bridge's MAC table sees */
  macs?: number;
}

/** Enough for a bridge's largest table, and the source MACs stay within one 02:01:xx:xx:xx:xx block. */
const MAX_MACS = 1 << 24;

export const DEFAULT_FRAME = 64;
const SYNTAX = 'NAME[,size=N][,rate=PPS][,count=N][,macs=N]';
const EXPECTED = '(expected size=N, rate=PPS, count=N or macs=N)';

export const gen: PortKind<GenSpec> = {
  kind: 'gen',
  flag: 'gen',
  configKey: 'gen',
  syntax: SYNTAX,
  help: `a port that generates frames: ${SYNTAX} (size ${limits.minFrame}..${limits.maxFrame}, default ${DEFAULT_FRAME}; 0 = unlimited)`,
  parseFlag(text) {
    const where = flagWhere('--gen', text);
    const [name, ...opts] = text.split(',');
    const spec: GenSpec = { kind: 'gen', name: checkName(where, name), size: DEFAULT_FRAME, rate: 0, count: 0 };
    for (const [key, value] of parseOptions(where, opts)) {
      if (value === undefined) fail(where, `unknown option "${key}" ${EXPECTED}`);
      if (key === 'size') spec.size = checkRange(where, 'size', parseUint(where, 'size', value), limits.minFrame, limits.maxFrame);
      // Whole packets per second: the generator's clock counts packets, not fractions of them.
      else if (key === 'rate') spec.rate = parseUint(where, 'rate', value);
      else if (key === 'count') spec.count = parseUint(where, 'count', value);
      else if (key === 'macs') spec.macs = checkRange(where, 'macs', parseUint(where, 'macs', value), 1, MAX_MACS);
      else fail(where, `unknown option "${key}=${value}" ${EXPECTED}`);
    }
    return spec;
  },
  parseConfig(where, item) {
    const o = configObject(where, item, ['name', 'size', 'rate', 'count', 'macs']);
    const spec: GenSpec = {
      kind: 'gen',
      name: checkName(where, configString(`${where}.name`, o.name)),
      size:
        o.size === undefined
          ? DEFAULT_FRAME
          : checkRange(where, 'size', configUint(`${where}.size`, o.size), limits.minFrame, limits.maxFrame),
      rate: o.rate === undefined ? 0 : configUint(`${where}.rate`, o.rate),
      count: o.count === undefined ? 0 : configUint(`${where}.count`, o.count),
    };
    if (o.macs !== undefined) spec.macs = checkRange(where, 'macs', configUint(`${where}.macs`, o.macs), 1, MAX_MACS);
    return spec;
  },
  params: (s) => ({ size: s.size, rate: s.rate, count: s.count, macs: s.macs ?? 1 }),
  summary: (s) =>
    `gen ${s.size}-byte frames, ${s.rate === 0 ? 'unlimited rate' : `${s.rate} pps`}, ${s.count === 0 ? 'no count limit' : `${s.count} packets`}${s.macs && s.macs > 1 ? `, from ${s.macs} source MACs` : ''}`,
};
