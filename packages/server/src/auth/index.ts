/**
 * The auth layer: who a request is (`Authenticator`, from the `auth` settings) and what it may do
 * (`Grants`). Imports the model only; the routes call it.
 */
export {
  ApiKeyStore,
  generateApiKey,
  hashApiKey,
  parseKeyHash,
  readApiKeysFile,
} from './api-keys.js';
export {
  Authenticator,
  type AuthenticatorEvents,
  type AuthenticatorOptions,
  type AuthLogger,
  type ReloadReport,
} from './authenticator.js';
export { Grants, type GrantsData } from './grants.js';
export { OPEN_IDENTITY, isRevoked, type Identity } from './identity.js';
export { JwtVerifier, type VerifiedJwt } from './jwt.js';
export {
  AuthConfigError,
  authConfigured,
  type AuthSettings,
  type JwtKeySettings,
  type JwtSettings,
} from './settings.js';
export { extractToken, wwwAuthenticate, type Credentials } from './token.js';
