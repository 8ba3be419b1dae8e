import { watch, type FSWatcher } from 'node:fs';
import { readdir, readFile, readlink } from 'node:fs/promises';
import path from 'node:path';
import { logger } from '../observability/logger.js';
import type { DeviceCorrelator, ResolvedDevice, WaitForDeviceRequest } from './types.js';

/**
 * Which /dev/vdX carries this CloudStack volume? By the virtio serial CloudStack/KVM gives the
 * disk (volume UUID without dashes, first 20 characters), in priority order:
 *   1. /sys/block/<dev>/serial equal to it — authoritative (udev sometimes misses by-id links);
 *   2. /dev/disk/by-id/virtio-<serial> — the udev link;
 *   3. degraded and logged: the one virtio disk that is new since the attach began — failing on
 *      none or more than one (os-brick and Coriolis treat the diff the same way).
 * Waiting is event-driven: an fs watch on /sys/block and the by-id directory wakes the check at
 * once, and a short poll is the safety net where watches do not fire (sysfs does not notify).
 */
export interface SysfsCorrelatorOptions {
  sysfsRoot?: string; // default /sys
  devRoot?: string; // default /dev
  /** Safety-net poll of sysfs while waiting (default 50 ms): sysfs itself sends no inotify events. */
  pollMs?: number;
  /** Least interval between onWaiting calls (default 1000 ms). */
  heartbeatMs?: number;
}

export class CorrelationTimeoutError extends Error {
  readonly retryable = false;
  constructor(
    readonly serial: string,
    readonly waitedMs: number,
    /** Kernel names of the virtio disks present at the end of the wait. */
    readonly seen: string[],
    /** Their serials (kernel name → serial, '' when the disk reports none). */
    readonly seenSerials: Record<string, string> = {},
  ) {
    const described = seen.map((k) =>
      seenSerials[k] ? `${k} (serial ${seenSerials[k]})` : `${k} (no serial)`,
    );
    super(
      `no block device with virtio serial ${serial} appeared within ${waitedMs} ms ` +
        `(devices seen: ${described.length ? described.join(', ') : 'none'})`,
    );
    this.name = 'CorrelationTimeoutError';
  }
}

/** After a detach the device is still there; may clear later, so retryable. */
export class DeviceStillPresentError extends Error {
  readonly retryable = true;
  constructor(
    readonly serial: string,
    readonly waitedMs: number,
    readonly kernelName: string,
  ) {
    super(`device ${kernelName} with serial ${serial} still present ${waitedMs} ms after the detach`);
    this.name = 'DeviceStillPresentError';
  }
}

export class CorrelationError extends Error {
  readonly retryable = false;
  constructor(message: string) {
    super(message);
    this.name = 'CorrelationError';
  }
}

const VIRTIO_DISK = /^vd[a-z]+$/;

export class SysfsCorrelator implements DeviceCorrelator {
  private readonly sys: string;
  private readonly dev: string;
  private readonly pollMs: number;
  private readonly heartbeatMs: number;

  constructor(opts: SysfsCorrelatorOptions = {}) {
    this.sys = opts.sysfsRoot ?? '/sys';
    this.dev = opts.devRoot ?? '/dev';
    this.pollMs = opts.pollMs ?? 50;
    this.heartbeatMs = opts.heartbeatMs ?? 1000;
  }

  async listDevices(): Promise<string[]> {
    const names = await readdir(path.join(this.sys, 'block')).catch(() => [] as string[]);
    return names.filter((n) => VIRTIO_DISK.test(n)).sort();
  }

  async describeDevices(): Promise<ResolvedDevice[]> {
    const out: ResolvedDevice[] = [];
    for (const k of await this.listDevices()) {
      const serial = await this.serialOf(k);
      if (serial) out.push({ ...(await this.describe(k, serial)), method: 'sysfs-serial' });
    }
    return out;
  }

  /**
   * The disk carrying `serial`. `devicesBefore` (the disks listed before an attach began): the
   * disks that appeared since are read first, each group's serial files at once — the one just
   * attached is among them, and reading every disk's serial one after another was most of a
   * correlation on an appliance with many disks. A disk from before that still shows the serial
   * (one the kernel has not let go of yet) loses to one that appeared since.
   */
  async findBySerial(serial: string, devicesBefore?: readonly string[]): Promise<ResolvedDevice | undefined> {
    const all = await this.listDevices();
    const before = new Set(devicesBefore);
    const groups = devicesBefore
      ? [all.filter((k) => !before.has(k)), all.filter((k) => before.has(k))]
      : [all];
    for (const group of groups) {
      const serials = await Promise.all(group.map((k) => this.serialOf(k)));
      const i = serials.indexOf(serial);
      if (i >= 0) return { ...(await this.describe(group[i]!, serial)), method: 'sysfs-serial' };
    }
    const link = path.join(this.dev, 'disk', 'by-id', `virtio-${serial}`);
    const target = await readlink(link).catch(() => undefined);
    if (target) {
      const k = path.basename(target);
      if (VIRTIO_DISK.test(k)) return { ...(await this.describe(k, serial)), method: 'by-id' };
    }
    return undefined;
  }

  async waitForDevice(req: WaitForDeviceRequest): Promise<ResolvedDevice> {
    const started = Date.now();
    const found = await this.waitFor(
      async () => {
        const d = await this.findBySerial(req.serial, req.devicesBefore);
        if (d) return d;
        if (req.devicesBefore) return this.fallback(req);
        return undefined;
      },
      req.timeoutMs,
      req.signal,
      (elapsed) => this.listDevices().then((seen) => req.onWaiting?.(elapsed, seen)),
    );
    if (!found) {
      const seen = await this.listDevices();
      const serials: Record<string, string> = {};
      for (const k of seen) serials[k] = (await this.serialOf(k)) ?? '';
      throw new CorrelationTimeoutError(req.serial, Date.now() - started, seen, serials);
    }
    if (req.expectedSizeBytes !== undefined && found.sizeBytes !== req.expectedSizeBytes) {
      throw new CorrelationError(
        `device ${found.devicePath} with serial ${req.serial} is ${found.sizeBytes} bytes, CloudStack says ${req.expectedSizeBytes}`,
      );
    }
    return found;
  }

  async waitForGone(serial: string, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    const started = Date.now();
    const gone = await this.waitFor(
      async () => ((await this.findBySerial(serial)) ? undefined : true),
      timeoutMs,
      signal,
    );
    if (!gone) {
      const still = await this.findBySerial(serial);
      throw new DeviceStillPresentError(serial, Date.now() - started, still?.kernelName ?? '?');
    }
  }

  /**
   * The degraded fallback: exactly one virtio disk that was not there before the attach, and
   * which reports no serial of its own (a disk with another serial is another volume).
   */
  private async fallback(req: WaitForDeviceRequest): Promise<ResolvedDevice | undefined> {
    const before = new Set(req.devicesBefore);
    const fresh = [];
    for (const k of await this.listDevices()) {
      if (before.has(k)) continue;
      const s = await this.serialOf(k);
      if (!s) fresh.push(k);
    }
    if (fresh.length === 0) return undefined;
    if (fresh.length > 1) {
      throw new CorrelationError(
        `serial ${req.serial} not found and ${fresh.length} new devices without a serial appeared (${fresh.join(', ')}): refusing to guess`,
      );
    }
    logger.warn(
      { serial: req.serial, device: fresh[0] },
      'correlation fell back to the one new device (degraded)',
    );
    return { ...(await this.describe(fresh[0]!, req.serial)), method: 'new-device-fallback' };
  }

  private async serialOf(kernelName: string): Promise<string | undefined> {
    const s = await readFile(path.join(this.sys, 'block', kernelName, 'serial'), 'utf8').catch(
      () => undefined,
    );
    return s?.trim() || undefined;
  }

  private async describe(kernelName: string, serial: string) {
    const sectors = Number(
      (await readFile(path.join(this.sys, 'block', kernelName, 'size'), 'utf8').catch(() => '0')).trim(),
    );
    return { devicePath: path.join(this.dev, kernelName), kernelName, serial, sizeBytes: sectors * 512 };
  }

  /**
   * Run `check` now, on every fs event, and every pollMs, until it yields or time runs out.
   * The events that matter come from devtmpfs (/dev/vdX appears) and udev (/dev/disk/by-id);
   * sysfs sends none, so its directory is watched only for test trees and the poll covers it.
   */
  private async waitFor<T>(
    check: () => Promise<T | undefined>,
    timeoutMs: number,
    signal?: AbortSignal,
    onWaiting?: (elapsedMs: number) => unknown,
  ): Promise<T | undefined> {
    const aborted = () => signal?.reason ?? new Error('aborted');
    if (signal?.aborted) throw aborted();
    const started = Date.now();
    const first = await check();
    if (first !== undefined) return first;
    const watchers: FSWatcher[] = [];
    let wake: () => void = () => {};
    let dirty = false; // an event arrived while a check was running
    const onEvent = () => {
      dirty = true;
      wake();
    };
    for (const dir of [path.join(this.sys, 'block'), path.join(this.dev, 'disk', 'by-id'), this.dev]) {
      try {
        const w = watch(dir, onEvent);
        w.on('error', () => w.close()); // the directory went away; the poll covers it
        watchers.push(w);
      } catch {
        // Not every directory exists (no udev → no by-id); the poll covers it.
      }
    }
    signal?.addEventListener('abort', onEvent);
    let lastBeat = started;
    try {
      while (Date.now() - started < timeoutMs) {
        if (!dirty) {
          await new Promise<void>((resolve) => {
            const t = setTimeout(
              resolve,
              Math.min(this.pollMs, Math.max(0, timeoutMs - (Date.now() - started))),
            );
            wake = () => (clearTimeout(t), resolve());
          });
        }
        dirty = false;
        wake = () => {};
        if (signal?.aborted) throw aborted();
        const r = await check();
        if (r !== undefined) return r;
        if (onWaiting && Date.now() - lastBeat >= this.heartbeatMs) {
          lastBeat = Date.now();
          await onWaiting(Date.now() - started);
        }
      }
      // One last look: the device may have appeared in the final poll interval.
      return await check();
    } finally {
      signal?.removeEventListener('abort', onEvent);
      for (const w of watchers) w.close();
    }
  }
}
