/**
 * Prometheus counters of the notification pipeline, per delivery channel, in the
 * registry they are given (the worker's, or a gateway's).
 */
import { Counter, type Registry } from 'prom-client';
import { DELIVERY_CHANNELS } from '../config/notifications.js';

export type MetricChannel = 'webpush' | 'fcm' | 'email' | 'in_app';

export class NotificationMetrics {
  /** Deliveries put on the queue. */
  readonly queued: Counter<'channel'>;
  /** Deliveries that reached at least one target. */
  readonly sent: Counter<'channel'>;
  /** Deliveries that failed for good (after their last attempt). */
  readonly failed: Counter<'channel'>;

  constructor(registry: Registry) {
    const make = (name: string, help: string) =>
      new Counter({ name, help, labelNames: ['channel'] as const, registers: [registry] });
    this.queued = make('streamgate_notifications_queued_total', 'Notification deliveries queued, per channel');
    this.sent = make('streamgate_notifications_sent_total', 'Notification deliveries sent, per channel');
    this.failed = make('streamgate_notifications_failed_total', 'Notification deliveries failed after their last attempt, per channel');
    for (const channel of [...DELIVERY_CHANNELS, 'in_app'] as const) {
      this.queued.labels(channel).inc(0);
      this.sent.labels(channel).inc(0);
      this.failed.labels(channel).inc(0);
    }
  }
}
