import http from 'node:http';
import { gunzipSync } from 'node:zlib';

/**
 * An HTTP client written to the old volume daemon's contract exactly as the migration engine's
 * Go client behaves, to prove the engine can switch to /api/v1 by changing its URL alone:
 *
 * - it cannot send headers: each request carries what Go's net/http sends on its own — Host,
 *   `User-Agent: Go-http-client/1.1`, `Accept-Encoding: gzip` — plus `Content-Type:
 *   application/json` and Content-Length when there is a body. Detach and delete send no body
 *   and no Content-Type (a POST without a body still says `Content-Length: 0`, as Go does);
 * - every mutation accepts only HTTP 201; anything else is an error built from `{"error":
 *   "<string>", "code": "<string>"}` when the body decodes so, else from the raw body;
 * - bodies are decoded with Go's encoding/json rules for the client's structs: a field of the
 *   wrong type fails the whole call (a number for a string, a non-string metadata value, a time
 *   that is not RFC 3339, a fraction for an int); absent or null fields take Go's zero value.
 *   With `strict` (the tests' default) every field the contract lists must also be present;
 * - WaitForCompletion polls GET /operations/:id every `pollMs` (Go: 2 s) until `completed`
 *   (done), `failed` (error carrying `error`) or `cancelled` (error); anything else, and any
 *   failed poll, keeps it polling until the timeout.
 */

// ---- Go's encoding/json, for the shapes the engine's client declares ------------------------
type Kind = 'string' | '*string' | 'int' | 'bool' | 'map' | 'map[string]string' | 'time' | '*time';

/** Go's time.Parse(time.RFC3339, …): what `time.Time` fields accept. */
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

export class DecodeError extends Error {
  constructor(what: string, field: string, why: string) {
    super(`failed to decode ${what}: ${field}: ${why}`);
    this.name = 'DecodeError';
  }
}

function decodeField(what: string, field: string, kind: Kind, v: unknown): unknown {
  const bad = (why: string) => new DecodeError(what, field, why);
  if (v === null || v === undefined)
    // Go leaves the zero value on null (and on an absent field).
    return kind === '*string' || kind === '*time'
      ? null
      : kind === 'int'
        ? 0
        : kind === 'bool'
          ? false
          : kind === 'map' || kind === 'map[string]string'
            ? {}
            : kind === 'time'
              ? '0001-01-01T00:00:00Z'
              : '';
  switch (kind) {
    case 'string':
    case '*string':
      if (typeof v !== 'string') throw bad(`cannot unmarshal ${typeof v} into Go value of type string`);
      return v;
    case 'int':
      if (typeof v !== 'number' || !Number.isInteger(v))
        throw bad(`cannot unmarshal ${JSON.stringify(v)} into Go value of type int`);
      return v;
    case 'bool':
      if (typeof v !== 'boolean') throw bad(`cannot unmarshal ${typeof v} into Go value of type bool`);
      return v;
    case 'map':
      if (typeof v !== 'object' || Array.isArray(v))
        throw bad('cannot unmarshal into map[string]interface {}');
      return v;
    case 'map[string]string':
      if (typeof v !== 'object' || Array.isArray(v)) throw bad('cannot unmarshal into map[string]string');
      for (const [k, x] of Object.entries(v as object))
        if (typeof x !== 'string')
          throw bad(`${k}: cannot unmarshal ${typeof x} into Go value of type string`);
      return v;
    case 'time':
    case '*time':
      if (typeof v !== 'string' || !RFC3339.test(v))
        throw bad(`parsing time ${JSON.stringify(v)} as RFC 3339`);
      return v;
  }
}

function decodeStruct<T>(
  what: string,
  spec: Record<keyof T & string, Kind>,
  json: unknown,
  strict: boolean,
): T {
  if (json === null) json = {}; // Go: null into a struct is a no-op
  if (typeof json !== 'object' || Array.isArray(json))
    throw new DecodeError(
      what,
      '(body)',
      `cannot unmarshal ${Array.isArray(json) ? 'array' : typeof json} into a struct`,
    );
  const o = json as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const [field, kind] of Object.entries(spec) as [string, Kind][]) {
    if (strict && !(field in o)) throw new DecodeError(what, field, 'missing (the contract always sends it)');
    out[field] = decodeField(what, field, kind, o[field]);
  }
  return out as T;
}

function decodeArray<T>(
  what: string,
  spec: Record<keyof T & string, Kind>,
  json: unknown,
  strict: boolean,
): T[] {
  if (json === null) return [];
  if (!Array.isArray(json))
    throw new DecodeError(what, '(body)', `cannot unmarshal ${typeof json} into Go value of type []${what}`);
  return json.map((x) => decodeStruct<T>(what, spec, x, strict));
}

// ---- the engine client's types -----------------------------------------------------------------
export interface VolumeOperation {
  id: string;
  type: string;
  status: string;
  volume_id: string;
  vm_id: string | null;
  request: Record<string, unknown>;
  response: Record<string, unknown>;
  error: string;
  created_at: string;
  updated_at: string;
  completed_at: string | null;
}
const VOLUME_OPERATION: Record<keyof VolumeOperation, Kind> = {
  id: 'string',
  type: 'string',
  status: 'string',
  volume_id: 'string',
  vm_id: '*string',
  request: 'map',
  response: 'map',
  error: 'string',
  created_at: 'time',
  updated_at: 'time',
  completed_at: '*time',
};

export interface DeviceMapping {
  id: string;
  volume_id: string;
  vm_id: string;
  device_path: string;
  cloudstack_state: string;
  linux_state: string;
  size: number;
  last_sync: string;
  created_at: string;
  updated_at: string;
}
const DEVICE_MAPPING: Record<keyof DeviceMapping, Kind> = {
  id: 'string',
  volume_id: 'string',
  vm_id: 'string',
  device_path: 'string',
  cloudstack_state: 'string',
  linux_state: 'string',
  size: 'int',
  last_sync: 'time',
  created_at: 'time',
  updated_at: 'time',
};

export interface VolumeMapping {
  volume_id: string;
  vm_id: string;
  device_path: string;
  attached_at: string;
}
const VOLUME_MAPPING: Record<keyof VolumeMapping, Kind> = {
  volume_id: 'string',
  vm_id: 'string',
  device_path: 'string',
  attached_at: 'string',
};

export interface NBDExportInfo {
  id: string;
  volume_id: string;
  export_name: string;
  device_path: string;
  port: number;
  status: string;
  created_at: string;
  updated_at: string;
  metadata: Record<string, string>;
}
const NBD_EXPORT_INFO: Record<keyof NBDExportInfo, Kind> = {
  id: 'string',
  volume_id: 'string',
  export_name: 'string',
  device_path: 'string',
  port: 'int',
  status: 'string',
  created_at: 'time',
  updated_at: 'time',
  metadata: 'map[string]string',
};

export interface CreateVolumeRequest {
  name: string;
  size: number;
  disk_offering_id: string;
  zone_id: string;
  metadata?: Record<string, string>;
}
export interface AttachVolumeWithContextRequest {
  vm_id: string;
  vm_name?: string;
  disk_id?: string;
  request_persistent_name?: boolean;
}

/** A call that did not get the status it accepts (Go's handleErrorResponse). */
export class VolumeDaemonError extends Error {
  constructor(
    message: string,
    readonly status: number,
    /** `error` and `code` when the body decoded as `{"error": string, "code": string}`. */
    readonly decoded: { error: string; code: string } | undefined,
    readonly body: string,
  ) {
    super(message);
    this.name = 'VolumeDaemonError';
  }
}

export interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export class OldContractClient {
  private readonly base: URL;

  constructor(
    baseUrl = 'http://localhost:8090',
    private readonly opts: { timeoutMs?: number; pollMs?: number; strict?: boolean } = {},
  ) {
    this.base = new URL(baseUrl);
  }

  // -- the engine's calls ---------------------------------------------------------------------
  createVolume(req: CreateVolumeRequest) {
    return this.doVolumeOperation('POST', '/api/v1/volumes', stripEmpty(req, ['metadata']));
  }
  attachVolume(volumeId: string, vmId: string) {
    return this.doVolumeOperation('POST', `/api/v1/volumes/${volumeId}/attach`, { vm_id: vmId });
  }
  /** The persistent-naming form: `vm_name`, `disk_id`, `request_persistent_name` are omitempty. */
  attachVolumeWithContext(volumeId: string, req: AttachVolumeWithContextRequest) {
    return this.doVolumeOperation(
      'POST',
      `/api/v1/volumes/${volumeId}/attach`,
      stripEmpty(req, ['vm_name', 'disk_id', 'request_persistent_name']),
    );
  }
  attachVolumeAsRoot(volumeId: string, vmId: string) {
    return this.doVolumeOperation('POST', `/api/v1/volumes/${volumeId}/attach-root`, { vm_id: vmId });
  }
  detachVolume(volumeId: string) {
    return this.doVolumeOperation('POST', `/api/v1/volumes/${volumeId}/detach`, undefined);
  }
  cleanupTestFailover(testVmId: string, volumeId: string, shaVmId: string, deleteVm: boolean) {
    return this.doVolumeOperation('POST', '/api/v1/cleanup/test-failover', {
      test_vm_id: testVmId,
      volume_id: volumeId,
      oma_vm_id: shaVmId,
      delete_vm: deleteVm,
      force_clean: false,
    });
  }
  deleteVolume(volumeId: string) {
    return this.doVolumeOperation('DELETE', `/api/v1/volumes/${volumeId}`, undefined);
  }

  async getOperation(operationId: string): Promise<VolumeOperation> {
    const r = await this.request('GET', `/api/v1/operations/${operationId}`, undefined);
    if (r.status !== 200) throw this.errorOf(r);
    return decodeStruct<VolumeOperation>('operation', VOLUME_OPERATION, parse(r.body), this.strict);
  }
  async getVolumeDevice(volumeId: string): Promise<DeviceMapping> {
    const r = await this.request('GET', `/api/v1/volumes/${volumeId}/device`, undefined);
    if (r.status !== 200) throw this.errorOf(r);
    return decodeStruct<DeviceMapping>('device mapping', DEVICE_MAPPING, parse(r.body), this.strict);
  }
  /** 404 means "no volumes attached": an empty list, as the engine's client reads it. */
  async listVolumes(vmId: string): Promise<VolumeMapping[]> {
    const r = await this.request('GET', `/api/v1/vms/${vmId}/volumes`, undefined);
    if (r.status === 404) return [];
    if (r.status !== 200) throw this.errorOf(r);
    return decodeArray<VolumeMapping>('VolumeMapping', VOLUME_MAPPING, parse(r.body), this.strict);
  }
  async getNbdExport(volumeId: string): Promise<NBDExportInfo> {
    const r = await this.request('GET', `/api/v1/exports/${volumeId}`, undefined);
    if (r.status === 404)
      throw new VolumeDaemonError(`NBD export not found for volume: ${volumeId}`, 404, undefined, r.body);
    if (r.status !== 200) throw this.errorOf(r);
    return decodeStruct<NBDExportInfo>('NBD export', NBD_EXPORT_INFO, parse(r.body), this.strict);
  }
  async listNbdExports(): Promise<NBDExportInfo[]> {
    const r = await this.request('GET', '/api/v1/exports', undefined);
    if (r.status !== 200) throw this.errorOf(r);
    return decodeArray<NBDExportInfo>('NBDExportInfo', NBD_EXPORT_INFO, parse(r.body), this.strict);
  }
  async healthCheck(): Promise<void> {
    const r = await this.request('GET', '/health', undefined);
    if (r.status !== 200)
      throw new VolumeDaemonError(`volume daemon unhealthy: status ${r.status}`, r.status, undefined, r.body);
  }

  /** WaitForCompletionWithTimeout (default 5 min, as WaitForCompletion). */
  async waitForCompletion(operationId: string, timeoutMs = 5 * 60_000): Promise<VolumeOperation> {
    const deadline = Date.now() + timeoutMs;
    const pollMs = this.opts.pollMs ?? 2_000;
    for (;;) {
      // Go's ticker: the first look is one interval after the start.
      const wait = Math.min(pollMs, deadline - Date.now());
      if (wait <= 0)
        throw new Error(`operation timeout or cancelled: ${operationId}: context deadline exceeded`);
      await new Promise((r) => setTimeout(r, wait));
      let op: VolumeOperation;
      try {
        op = await this.getOperation(operationId);
      } catch {
        continue; // "Failed to get operation status, retrying"
      }
      if (op.status === 'completed') return op;
      if (op.status === 'failed') throw new OperationFailedError(`operation failed: ${op.error}`, op);
      if (op.status === 'cancelled') throw new OperationFailedError('operation was cancelled', op);
    }
  }

  // -- plumbing ---------------------------------------------------------------------------------
  private get strict() {
    return this.opts.strict ?? true;
  }

  private async doVolumeOperation(method: string, path: string, body: unknown): Promise<VolumeOperation> {
    const r = await this.request(method, path, body);
    if (r.status !== 201) throw this.errorOf(r);
    return decodeStruct<VolumeOperation>('operation response', VOLUME_OPERATION, parse(r.body), this.strict);
  }

  private errorOf(r: RawResponse): VolumeDaemonError {
    // Go: json.Unmarshal into {Error string; Code string; Details interface{}}; on failure the raw body.
    let decoded: { error: string; code: string } | undefined;
    try {
      const j = JSON.parse(r.body) as unknown;
      if (j !== null && typeof j === 'object' && !Array.isArray(j)) {
        const o = j as Record<string, unknown>;
        const okType = (v: unknown) => v === undefined || v === null || typeof v === 'string';
        if (okType(o.error) && okType(o.code))
          decoded = {
            error: (o.error as string | undefined) ?? '',
            code: (o.code as string | undefined) ?? '',
          };
      }
    } catch {
      // not JSON
    }
    return decoded
      ? new VolumeDaemonError(
          `volume operation failed (${decoded.code}): ${decoded.error}`,
          r.status,
          decoded,
          r.body,
        )
      : new VolumeDaemonError(
          `volume operation failed with status ${r.status}: ${r.body}`,
          r.status,
          undefined,
          r.body,
        );
  }

  /** One request as Go's http.Client sends it (body `undefined` = Go's nil body). */
  request(method: string, path: string, body: unknown): Promise<RawResponse> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string> = {
      'User-Agent': 'Go-http-client/1.1',
      'Accept-Encoding': 'gzip',
    };
    if (payload) {
      headers['Content-Type'] = 'application/json';
      headers['Content-Length'] = String(payload.length);
    } else if (method === 'POST' || method === 'PUT' || method === 'PATCH') {
      headers['Content-Length'] = '0';
    }
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          host: this.base.hostname,
          port: this.base.port || 80,
          method,
          path,
          headers,
          agent: false,
          timeout: this.opts.timeoutMs ?? 30_000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            let buf = Buffer.concat(chunks);
            if (res.headers['content-encoding'] === 'gzip') buf = gunzipSync(buf);
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: buf.toString('utf8') });
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: Client.Timeout exceeded`)));
      req.on('error', reject);
      req.end(payload);
    });
  }
}

export class OperationFailedError extends Error {
  constructor(
    message: string,
    readonly operation: VolumeOperation,
  ) {
    super(message);
    this.name = 'OperationFailedError';
  }
}

function parse(body: string): unknown {
  try {
    return JSON.parse(body) as unknown;
  } catch (e) {
    throw new DecodeError('response', '(body)', (e as Error).message);
  }
}

/** Go's `omitempty`: empty strings, false, empty maps are left out of the JSON. */
function stripEmpty<T extends object>(o: T, keys: (keyof T)[]): Partial<T> {
  const out: Partial<T> = { ...o };
  for (const k of keys) {
    const v = out[k];
    if (
      v === undefined ||
      v === '' ||
      v === false ||
      (typeof v === 'object' && v !== null && !Object.keys(v).length)
    )
      delete out[k];
  }
  return out;
}
