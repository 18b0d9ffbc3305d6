export { createGateway, type Gateway, type GatewayOptions } from './gateway.js';
export { Publisher, type PublisherOptions, type PublishOptions, type PublishedEvent } from './publisher.js';
export { loadConfig, ConfigError, type Config } from './config/config.js';
export { StreamgateError } from './errors.js';
export { signUserToken, type SignOptions } from './auth/tokens.js';
export * from './protocol/index.js';
