export * from './codes.js';
export * from './channel.js';
export * from './event-id.js';
export * from './frames.js';
