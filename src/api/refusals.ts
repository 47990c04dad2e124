// Every way the API turns a client away, each with its HTTP status, and the one counter that counts
// them all: vhostwire_api_refusals_total{listener, reason}. A refusal is answered with a JSON body
// {"error": <what was wrong and what to do>, "reason": <the label it is counted under>} and the
// connection is closed. docs/security.md lists each reason with the test that provokes it.
import { Counter, type Registry } from 'prom-client';

export type ListenerKind = 'tcp' | 'unix';

export const REFUSAL_REASONS = [
  // routing
  'not_found',
  'method_not_allowed',
  // who may change things
  'changes_over_tcp_off',
  'not_local',
  'foreign_host',
  'foreign_origin',
  'no_token',
  'bad_token',
  'wrong_content_type',
  // what a change carries
  'body_too_large',
  'bad_body',
  // what any client may hold
  'header_too_large',
  'request_timeout',
  'malformed_request',
  'too_many_connections',
  'connection_evicted',
] as const;

export type RefusalReason = (typeof REFUSAL_REASONS)[number];

export interface Refusal {
  status: number;
  reason: RefusalReason;
  message: string;
  headers?: Record<string, string>;
}

export function refusal(status: number, reason: RefusalReason, message: string, headers?: Record<string, string>): Refusal {
  return { status, reason, message, headers };
}

export function refusalBody(r: Refusal): string {
  return JSON.stringify({ error: r.message, reason: r.reason });
}

/** The refusal counter, registered on the registry /metrics serves; every label set starts at 0. */
export class RefusalCounter {
  readonly #counter: Counter<'listener' | 'reason'>;

  constructor(registry: Registry, listeners: ListenerKind[]) {
    this.#counter = new Counter({
      name: 'vhostwire_api_refusals_total',
      help: 'Requests and connections the control API refused or cut off, by listener (tcp: --metrics, unix: --api) and reason',
      labelNames: ['listener', 'reason'],
      registers: [registry],
    });
    for (const listener of listeners) for (const reason of REFUSAL_REASONS) this.#counter.inc({ listener, reason }, 0);
  }

  count(listener: ListenerKind, reason: RefusalReason): void {
    this.#counter.inc({ listener, reason });
  }
}
