import { execa } from 'execa';

/**
 * How device-layer code runs a program: always an argv array, never a shell string.
 * The default runs it here with execa; the appliance lab supplies one that runs the same argv
 * inside the guest kernel (so dm code is exercised against a real device-mapper).
 */
export interface CommandResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

export interface CommandRunner {
  run(
    file: string,
    args: readonly string[],
    opts?: { input?: string; timeoutMs?: number },
  ): Promise<CommandResult>;
}

export const localRunner: CommandRunner = {
  async run(file, args, opts = {}) {
    const r = await execa(file, [...args], {
      reject: false,
      input: opts.input,
      timeout: opts.timeoutMs ?? 30_000,
      env: { LC_ALL: 'C' },
      stripFinalNewline: false,
    });
    if (r.failed && r.exitCode === undefined) {
      // Spawn failure (missing binary) or timeout: not a tool's answer, so surface it as is.
      throw new Error(`${file} could not run: ${r.shortMessage}`);
    }
    return { stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? ''), exitCode: r.exitCode ?? -1 };
  },
};
