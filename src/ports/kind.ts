// A port kind as the control plane sees it: its serve flag and --config entry, how they are parsed and
// checked, and the flat parameters the addon's kind of the same name (addon/ports/<kind>/) is created
// from. Everything kind-specific on the TypeScript side lives in the kind's own file next to this one;
// index.ts lists them, one line each.
import type { Json } from '../config/parse';
import type { Capability } from '../config/privileges';

export interface PortSpec {
  /** The kind's name, as the addon registers it */
  kind: string;
  name: string;
}

/** What the addon's addPort takes: already-checked values by name. */
export type NativePortParams = Record<string, string | number | boolean>;

export interface PortKind<S extends PortSpec = PortSpec> {
  readonly kind: S['kind'];
  /** The serve flag, e.g. "vhost-user" for --vhost-user (repeatable) */
  readonly flag: string;
  /** The --config key holding an array of these, e.g. "vhostUser" */
  readonly configKey: string;
  /** The flag's value syntax, e.g. "NAME=PATH[,client][,queues=N]" */
  readonly syntax: string;
  /** One line for --help */
  readonly help: string;
  parseFlag(text: string): S;
  /** One element of the --config array; where names it in errors ("--config x.json: vhostUser[0]") */
  parseConfig(where: string, item: Json): S;
  params(spec: S): NativePortParams;
  /** What serve prints once the port exists */
  summary(spec: S): string;
  /** A resource only one port may hold (a socket path, an interface), checked across the configuration */
  exclusive?(spec: S): { what: string; value: string };
  /** The capabilities its ports still need once set up (serve --user keeps them and drops the rest) */
  readonly capabilities?: readonly Capability[];
  /** Files its port creates and removes at close: serve --user gives them to that user */
  createdFiles?(spec: S): string[];
}
