/**
 * Prometheus metrics of one gateway, in a registry of its own so several gateways
 * in one process (tests, embedding) never collide.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export type TransportName = 'websocket' | 'sse' | 'poll';

export class Metrics {
  readonly registry = new Registry();
  readonly connections: Gauge<'transport' | 'tenant'>;
  readonly eventsPublished: Counter<'source'>;
  readonly publishDuration: Histogram<'source'>;
  readonly httpRequests: Counter<'method' | 'route' | 'status'>;

  constructor(options: { defaultMetrics?: boolean } = {}) {
    this.connections = new Gauge({
      name: 'streamgate_connections',
      help: 'Open client connections',
      labelNames: ['transport', 'tenant'],
      registers: [this.registry],
    });
    for (const transport of ['websocket', 'sse', 'poll'] as const) this.connections.labels(transport, '').set(0);
    this.eventsPublished = new Counter({
      name: 'streamgate_events_published_total',
      help: 'Events appended to the log',
      labelNames: ['source'],
      registers: [this.registry],
    });
    this.publishDuration = new Histogram({
      name: 'streamgate_publish_duration_seconds',
      help: 'Time from a publish request to its acknowledgement by the log',
      labelNames: ['source'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [this.registry],
    });
    this.httpRequests = new Counter({
      name: 'streamgate_http_requests_total',
      help: 'HTTP requests by route and status',
      labelNames: ['method', 'route', 'status'],
      registers: [this.registry],
    });
    if (options.defaultMetrics) collectDefaultMetrics({ register: this.registry, prefix: 'streamgate_' });
  }
}
