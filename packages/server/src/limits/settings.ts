import type { LimitOverride, LimitSet } from '../model/limits.js';

/**
 * What the limits layer is built from: the resolved `rateLimits` section of the configuration.
 * Declared here so that this layer depends on the model and the auth layer only; the
 * configuration's schema produces exactly this shape.
 */
export interface LimitSettings {
  enabled: boolean;
  perKey: LimitSet;
  perUser: LimitSet;
  perAddress: LimitSet;
  overrides: {
    keys: Record<string, LimitOverride>;
    users: Record<string, LimitOverride>;
    /** By address range (an address, a CIDR, `loopback`…). */
    addresses: Record<string, LimitOverride>;
  };
  trustedProxies: string[];
  exemptAddresses: string[];
  shared: 'auto' | 'local';
  /** ms */
  syncInterval: number;
}
