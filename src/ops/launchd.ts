/**
 * launchd support, pure: the property list that runs `l2-uploader run` as a
 * per-user LaunchAgent or a boot-time LaunchDaemon, where that plist lives,
 * and the launchctl command lines that load and unload it. No I/O here:
 * `cli/install.ts` writes the files and runs the commands. The example
 * plists committed in `launchd/` are `examplePlists()` (a test keeps them equal).
 *
 * Promises: every path in the plist is absolute (launchd has no shell and no
 * cwd to resolve against); XML escaping is the `plist` package's; no secret
 * ever goes into the plist — credentials stay in the env file or the AWS
 * credential chain, because plists are world-readable by convention.
 */

import * as plist from "plist";

export type JobKind = "agent" | "daemon";

/** Reverse-DNS labels; launchd identifies the job (and names its plist) by them. */
export const LABELS: Readonly<Record<JobKind, string>> = Object.freeze({
  agent: "com.l2uploader.agent",
  daemon: "com.l2uploader.daemon",
});

/** Seconds launchd waits between two starts of the job (also its default). */
export const THROTTLE_INTERVAL_SECONDS = 10;

/**
 * Seconds between launchd's SIGTERM and its SIGKILL. The collector exits within
 * 10 s of SIGTERM after sealing and storing open batches; 30 leaves room for a
 * slow disk or S3 without ever cutting the shutdown flush short.
 */
export const EXIT_TIMEOUT_SECONDS = 30;

/**
 * launchd's own default PATH lacks /usr/local/bin and /opt/homebrew/bin. The
 * collector runs no tools itself, but anything it might spawn later, and a
 * person reading the plist, should see the usual Homebrew locations.
 */
export const DEFAULT_PATH = "/usr/local/bin:/opt/homebrew/bin:/usr/bin:/bin:/usr/sbin:/sbin";

/** Names that look like they hold a credential; such a variable never goes into a plist. */
const SECRET_NAME =
  /SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|PRIVATE|ACCESS_KEY|SESSION|WEBHOOK|API_?KEY|AUTH/i;

/** Log file names inside `logDir`. */
export const STDOUT_LOG = "l2-uploader.out.log";
export const STDERR_LOG = "l2-uploader.err.log";

/** What a job needs to know; every path absolute. */
export interface JobSpec {
  readonly kind: JobKind;
  /** The compiled `l2-uploader` executable. */
  readonly programPath: string;
  /** Where relative settings (DATA_DIR=./data) resolve. */
  readonly workingDirectory: string;
  /** Passed as `--env-file`; holds the settings and, if any, the secrets. */
  readonly envFile: string;
  /** Directory of the stdout/stderr logs launchd writes. */
  readonly logDir: string;
  /** Daemon only (required there): the account the daemon runs as; never root by accident. */
  readonly userName?: string;
  /** Daemon only, optional: the group it runs as (default: the user's primary group). */
  readonly groupName?: string;
  /** Non-secret environment; default `{ PATH: DEFAULT_PATH }`. */
  readonly environment?: Readonly<Record<string, string>>;
}

/**
 * The plist as data. A `type`, not an interface, so it is assignable to the
 * `plist` package's `PlistValue` (interfaces get no implicit index signature).
 */
export type LaunchdJob = {
  Label: string;
  ProgramArguments: string[];
  WorkingDirectory: string;
  EnvironmentVariables: Record<string, string>;
  UserName?: string;
  GroupName?: string;
  RunAtLoad: boolean;
  KeepAlive: boolean;
  ThrottleInterval: number;
  ExitTimeOut: number;
  ProcessType: "Interactive" | "Standard";
  SoftResourceLimits: { NumberOfFiles: number };
  StandardOutPath: string;
  StandardErrorPath: string;
};

/** The job's soft limit on open files (launchd's default is 256). */
const OPEN_FILES = 4_096;

/** A spec launchd could not use, or one that would leak a secret. */
export class LaunchdSpecError extends Error {
  override name = "LaunchdSpecError";
}

/** A daemon names the user it runs as, and not root. */
function userProblems(spec: JobSpec): string[] {
  if (spec.kind !== "daemon") return [];
  if (!spec.userName) return ["a daemon needs userName (launchd would otherwise run it as root)"];
  // `install --daemon` from a root shell (no SUDO_USER): root-owned files would follow.
  return spec.userName === "root"
    ? [
      "a daemon runs as the user who installs it with sudo, not as root: run " +
      "`sudo l2-uploader install --daemon` from that user's shell",
    ]
    : [];
}

/** The job's plist contents; throws LaunchdSpecError on a relative path or a secret-looking variable. */
export function launchdJob(spec: JobSpec): LaunchdJob {
  const problems: string[] = [];
  const paths = {
    programPath: spec.programPath,
    workingDirectory: spec.workingDirectory,
    envFile: spec.envFile,
    logDir: spec.logDir,
  };
  for (const [name, value] of Object.entries(paths)) {
    if (!isAbsolute(value)) problems.push(`${name} must be an absolute path, got "${value}"`);
  }
  problems.push(...userProblems(spec));
  const environment = { ...(spec.environment ?? { PATH: DEFAULT_PATH }) };
  for (const name of Object.keys(environment)) {
    // Only the name is reported: the value may be the very secret we refuse.
    if (SECRET_NAME.test(name)) {
      problems.push(`environment variable ${name} looks secret; keep it in the env file`);
    }
  }
  if (problems.length > 0) throw new LaunchdSpecError(problems.join("\n"));

  const logDir = spec.logDir.replace(/\/+$/, "") || "/";
  // Keys in the order a person reads a plist: what runs, as whom, then the knobs.
  return {
    Label: LABELS[spec.kind],
    ProgramArguments: [spec.programPath, "run", "--env-file", spec.envFile],
    WorkingDirectory: spec.workingDirectory,
    EnvironmentVariables: environment,
    ...(spec.kind === "daemon" ? runAs(spec) : {}),
    RunAtLoad: true,
    // `true` (not { SuccessfulExit: false, Crashed: true }): a recorder that is
    // down loses data whatever the reason, and the collector exits 0 on a plain
    // SIGTERM, so a stray `kill` would otherwise stop recording until the next
    // login or boot. launchd still honours `launchctl bootout`/`unload`, which
    // is how uninstall stops it; ThrottleInterval bounds a crash loop.
    KeepAlive: true,
    ThrottleInterval: THROTTLE_INTERVAL_SECONDS,
    ExitTimeOut: EXIT_TIMEOUT_SECONDS,
    // launchd.plist(5): an unset ProcessType equals "Standard", which gets
    // "light resource limits … throttling its CPU usage and I/O bandwidth";
    // "Interactive" runs with none, like an app. The recorder stamps receive
    // times and must read its sockets without delay (late reads skew recv_ts,
    // and Binance drops slow consumers), so it must not be throttled.
    ProcessType: "Interactive",
    // launchd starts jobs with 256 descriptors (`launchctl limit maxfiles`),
    // and a compiled Deno program does not raise it itself: with more, the
    // gzip worker keeps the open batches' files open between the journal's
    // appends (batch/file_appends.ts) instead of opening each one four times
    // a second. Well under OPEN_MAX (10,240), which setrlimit(2) caps it at.
    SoftResourceLimits: { NumberOfFiles: OPEN_FILES },
    StandardOutPath: `${logDir}/${STDOUT_LOG}`,
    StandardErrorPath: `${logDir}/${STDERR_LOG}`,
  };
}

function runAs(spec: JobSpec): Pick<LaunchdJob, "UserName" | "GroupName"> {
  return spec.groupName
    ? { UserName: spec.userName, GroupName: spec.groupName }
    : { UserName: spec.userName };
}

/** The plist XML, escaped by the `plist` package. */
export function renderPlist(spec: JobSpec): string {
  return `${plist.build(launchdJob(spec), { indent: "  " })}\n`;
}

/** Where launchd looks for the job: the user's LaunchAgents, or the system's LaunchDaemons. */
export function plistPath(kind: JobKind, options: { readonly home: string }): string {
  return kind === "agent"
    ? `${options.home.replace(/\/+$/, "")}/Library/LaunchAgents/${LABELS.agent}.plist`
    : `/Library/LaunchDaemons/${LABELS.daemon}.plist`;
}

/** The launchctl domain: the user's GUI session for an agent, `system` for a daemon. */
export function domainTarget(kind: JobKind, uid: number): string {
  return kind === "agent" ? `gui/${uid}` : "system";
}

/** The launchctl service target, `<domain>/<label>`. */
export function serviceTarget(kind: JobKind, uid: number): string {
  return `${domainTarget(kind, uid)}/${LABELS[kind]}`;
}

/** One launchctl invocation, with the legacy form to try when the modern one fails. */
export interface LaunchctlStep {
  readonly argv: string[];
  /** Run when `argv` fails: the pre-10.10 `load`/`unload` form. */
  readonly fallback?: string[];
  /** Failure is expected in the common case and does not fail the install. */
  readonly optional: boolean;
  /** Why the step is there, for the dry-run listing and the log. */
  readonly why: string;
}

export interface LaunchctlTarget {
  /** The numeric user id: the `gui/<uid>` domain of an agent. */
  readonly uid: number;
  /** The installed plist. */
  readonly plistPath: string;
}

/** The launchctl steps that (re)load the job. */
export function installSteps(kind: JobKind, target: LaunchctlTarget): LaunchctlStep[] {
  const service = serviceTarget(kind, target.uid);
  return [
    {
      argv: ["launchctl", "bootout", service],
      optional: true,
      why: "unload a copy already loaded, so a re-install applies the new plist " +
        "(fails harmlessly when none is loaded)",
    },
    {
      argv: ["launchctl", "enable", service],
      optional: true,
      why: "clear a 'disabled' mark left by `unload -w`, which would make bootstrap refuse",
    },
    {
      argv: ["launchctl", "bootstrap", domainTarget(kind, target.uid), target.plistPath],
      fallback: ["launchctl", "load", "-w", target.plistPath],
      optional: false,
      why: "load and start the job (`load -w` is the legacy form, tried when bootstrap fails)",
    },
  ];
}

/** The launchctl steps that stop and unload the job. */
export function uninstallSteps(kind: JobKind, target: LaunchctlTarget): LaunchctlStep[] {
  return [{
    argv: ["launchctl", "bootout", serviceTarget(kind, target.uid)],
    fallback: ["launchctl", "unload", "-w", target.plistPath],
    optional: false,
    why: "stop the job (SIGTERM, then SIGKILL after ExitTimeOut) and unload it",
  }];
}

/** `launchctl print <target>`: exit 0 while the job is loaded. */
export function printCommand(kind: JobKind, uid: number): string[] {
  return ["launchctl", "print", serviceTarget(kind, uid)];
}

/** The paths the committed example plists use. */
export const EXAMPLE_PATHS = Object.freeze({
  programPath: "/usr/local/bin/l2-uploader",
  workingDirectory: "/usr/local/var/l2-uploader",
  envFile: "/usr/local/var/l2-uploader/.env",
  logDir: "/usr/local/var/log/l2-uploader",
  userName: "l2uploader",
});

/** File name in `launchd/` → XML, rendered with EXAMPLE_PATHS. */
export function examplePlists(): Record<string, string> {
  const { userName, ...paths } = EXAMPLE_PATHS;
  return {
    [`${LABELS.agent}.plist`]: renderPlist({ kind: "agent", ...paths }),
    [`${LABELS.daemon}.plist`]: renderPlist({ kind: "daemon", ...paths, userName }),
  };
}

/** A command line as a POSIX shell would read it back, for printing. */
export function shellJoin(argv: readonly string[]): string {
  return argv.map((arg) =>
    /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`
  )
    .join(" ");
}

function isAbsolute(path: string): boolean {
  return path.startsWith("/");
}
