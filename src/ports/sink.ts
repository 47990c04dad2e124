// Sink ports: copy every packet they are sent, as a NIC's transmit would, and drop it (addon/ports/test/).
import { checkName, configString, flagWhere } from '../config/parse';
import type { PortKind } from './kind';

export interface SinkSpec {
  kind: 'sink';
  name: string;
}

export const sink: PortKind<SinkSpec> = {
  kind: 'sink',
  flag: 'sink',
  configKey: 'sink',
  syntax: 'NAME',
  help: 'a port that drops what it is sent: NAME',
  parseFlag: (text) => ({ kind: 'sink', name: checkName(flagWhere('--sink', text), text) }),
  // In the config file a sink is just its name.
  parseConfig: (where, item) => ({ kind: 'sink', name: checkName(where, configString(where, item)) }),
  params: () => ({}),
  summary: () => 'sink',
};
