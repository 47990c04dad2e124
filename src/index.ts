// The library's public surface. Importing it loads the native addon.
export { Switch, SwitchError } from './switch';
export type {
  CounterValues,
  GenPortOptions,
  PortCounterSets,
  SwitchEvents,
  SwitchOptions,
  SwitchPortInfo,
  VhostUserPortOptions,
  Wire,
} from './switch';
export { Peer, PeerError } from './peer';
export type { PeerOptions, PeerRate } from './peer';
export { createRegistry } from './metrics';
export { startHttp, portToJson } from './http';
export type { HttpServer, PortJson, PortState } from './http';
export { buildServeConfig, loadConfigFile, UsageError } from './options';
export type { ServeConfig, ServeFlags, VhostUserSpec, GenSpec, Endpoint } from './options';
export { native } from './native';
export type { CounterInfo, Mode, PortEvent, PortInfo, TrafficOptions, VirtioUserStats } from './native';
