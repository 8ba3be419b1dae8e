/**
 * Typed failures of dmsetup. `retryable` is what the sagas' retry policies go by: a busy device
 * may free itself; an invalid table, a missing device where one is required or a permission
 * problem will not.
 */
export class DmError extends Error {
  readonly retryable: boolean = false;
  constructor(
    message: string,
    readonly args: readonly string[] = [],
    readonly stderr = '',
  ) {
    super(message);
    this.name = new.target.name;
  }
}
export class DmNotFoundError extends DmError {}
export class DmBusyError extends DmError {
  override readonly retryable = true;
}
export class DmInvalidTableError extends DmError {}
export class DmPermissionError extends DmError {}
export class DmCommandError extends DmError {
  override readonly retryable = true;
}
/** The device exists with a table we did not expect and the caller asked for no change. */
export class DmConflictError extends DmError {}

/** Map dmsetup's stderr to a typed error (messages as libdevmapper prints them). */
export function classifyDmFailure(args: readonly string[], stderr: string, exitCode: number): DmError {
  const text = stderr.trim() || `exit code ${exitCode}`;
  const msg = `dmsetup ${args.join(' ')}: ${text}`;
  if (/Device or resource busy|EBUSY/i.test(text)) return new DmBusyError(msg, args, stderr);
  if (/No such device or address|does not exist|No such device\b|not found/i.test(text)) {
    return new DmNotFoundError(msg, args, stderr);
  }
  // The kernel out of memory, an interrupted call, udev's sync timing out: try again later. Checked
  // before the ioctl patterns below, which would call any failed create/reload an invalid table.
  if (
    /Cannot allocate memory|ENOMEM|Resource temporarily unavailable|EAGAIN|Interrupted system call|timed out/i.test(
      text,
    )
  )
    return new DmCommandError(msg, args, stderr);
  if (/Permission denied|Operation not permitted|EACCES|EPERM/i.test(text))
    return new DmPermissionError(msg, args, stderr);
  if (
    /Invalid argument|Invalid format|reload ioctl .* failed|create ioctl .* failed|Invalid table/i.test(text)
  ) {
    return new DmInvalidTableError(msg, args, stderr);
  }
  return new DmCommandError(msg, args, stderr);
}
