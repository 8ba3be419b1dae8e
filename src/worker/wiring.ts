// Composition root: the concrete clients behind the narrow interfaces, built from config.
import type { AppConfig } from '../config/index.js';
import { CloudStackClient } from '../cloudstack/client.js';
import { SysfsCorrelator } from '../device/correlation.js';
import { DeviceMapper } from '../device/devicemapper.js';
import { createExportBackend, exportBackendConfigFromApp } from '../nbd/index.js';
import { logger } from '../observability/logger.js';

export function createDeviceLayer(cfg: Pick<AppConfig, 'SYSFS_ROOT' | 'DEV_ROOT'>) {
  return {
    correlator: new SysfsCorrelator({ sysfsRoot: cfg.SYSFS_ROOT, devRoot: cfg.DEV_ROOT }),
    dm: new DeviceMapper(),
  };
}

export function createExports(cfg: AppConfig) {
  const base = exportBackendConfigFromApp(cfg);
  return createExportBackend(
    { ...base, ...(cfg.NBD_URI_HOST ? { uriHost: cfg.NBD_URI_HOST } : {}) },
    { logger },
  );
}

export function createCloudStack(
  cfg: Pick<AppConfig, 'CLOUDSTACK_URL' | 'CLOUDSTACK_API_KEY' | 'CLOUDSTACK_SECRET_KEY'>,
) {
  return new CloudStackClient({
    url: cfg.CLOUDSTACK_URL,
    apiKey: cfg.CLOUDSTACK_API_KEY,
    secretKey: cfg.CLOUDSTACK_SECRET_KEY,
  });
}
