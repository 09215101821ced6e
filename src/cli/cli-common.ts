/** What every CLI verb shares: exit codes, the error type that carries one, and the verb shape. */

export const ExitCode = {
  OK: 0,
  /** The input could not be used: missing, not the right kind of file, truncated, corrupt. */
  BAD_INPUT: 1,
  /** Unknown verb or flag, missing argument. */
  USAGE: 2,
  /** A bug. */
  INTERNAL: 3,
} as const;

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/** A failure the user can act on: printed as one line on stderr, then the process exits with `exitCode`. */
export class CliError extends Error {
  readonly exitCode: ExitCodeValue;
  constructor(exitCode: ExitCodeValue, message: string) {
    super(message);
    this.name = 'CliError';
    this.exitCode = exitCode;
  }
}

/** One verb of the `sysprobe` command: takes the arguments after its name, resolves to an exit code. */
export interface Verb {
  run(args: string[]): Promise<number>;
}
