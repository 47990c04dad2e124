// The library's public surface. Importing it loads the native addon.
export { Switch, SwitchError } from './switch';
export type { CounterValues, PortCounterSets, SwitchEvents, SwitchOptions, SwitchPortInfo, Wire } from './switch';
export { portKinds } from './ports';
export type {
  AnyPortSpec,
  GenSpec,
  PortKind,
  SinkSpec,
  UplinkDetails,
  UplinkSpec,
  VhostUserDetails,
  VhostUserSpec,
  VringInfo,
} from './ports';
export { Peer, PeerError } from './harness/peer';
export type { PeerOptions, PeerRate } from './harness/peer';
export { createRegistry } from './api/metrics';
export { startApi, portToJson } from './api/http';
export type { Api, ApiOptions, PortJson, PortState } from './api/http';
export { buildServeConfig, loadConfigFile, UsageError } from './config/options';
export type { ServeConfig, ServeFlags, Endpoint } from './config/options';
export { native } from './native';
export type { CounterInfo, ForwarderInfo, Limits, Mode, PortEvent, PortInfo } from './native';
export type { TrafficOptions, VirtioUserStats } from './harness/frontend-native';
