/**
 * `l2-uploader install` / `uninstall`: puts the launchd plist in place and
 * loads it with launchctl (agent by default, `daemon: true` for a boot-time
 * LaunchDaemon), or stops and removes it. With `dryRun` it only prints the
 * plist and the exact commands. Every side effect (files, launchctl, output)
 * goes through the options, so tests run anywhere without launchd; the
 * plist and the command lines themselves come from `ops/launchd.ts`.
 * Returns an exit code: 0 done, 1 failed or refused (the reason is printed).
 */

import { basename, dirname, resolve } from "node:path";
import { ConfigError, parseConfig, parseEnvFile } from "../config.ts";
import {
  installSteps,
  type JobKind,
  type JobSpec,
  LABELS,
  type LaunchctlStep,
  LaunchdSpecError,
  plistPath,
  printCommand,
  renderPlist,
  serviceTarget,
  shellJoin,
  uninstallSteps,
} from "../ops/launchd.ts";

export interface CommandResult {
  readonly code: number;
  readonly stderr: string;
}

/** Runs `argv[0]` with the rest as arguments; never throws for a non-zero exit. */
export type RunCommand = (argv: string[]) => Promise<CommandResult>;

/** Numeric owner given to a created directory. */
export interface Owner {
  readonly uid: number;
  readonly gid: number;
}

export interface InstallOptions {
  /** A system-wide LaunchDaemon (boot time, needs root) instead of the user's LaunchAgent. */
  readonly daemon: boolean;
  /** Print the plist and the commands; write and run nothing. */
  readonly dryRun: boolean;
  /** Absolute path of the compiled executable (see `resolveProgramPath`). */
  readonly programPath: string;
  readonly workingDirectory: string;
  readonly envFile: string;
  readonly logDir: string;
  /** The account a daemon runs as (`UserName`); for an agent, the logged-in user. */
  readonly userName: string;
  /** Daemon only, optional `GroupName`. */
  readonly groupName?: string;
  /** This process's user id: `gui/<uid>` of an agent; 0 is required for a daemon. */
  readonly uid: number;
  /** The user's home directory: where `Library/LaunchAgents` is. */
  readonly home: string;
  /**
   * Daemon only: who owns the created log directory. launchd opens the log
   * files as `UserName`, so a root-owned directory would leave the job unable
   * to log; main passes SUDO_UID/SUDO_GID.
   */
  readonly logOwner?: Owner;
  /** Default `Deno.build.os`. */
  readonly os?: typeof Deno.build.os;
  /** Default: Deno.Command. */
  readonly runCommand?: RunCommand;
  /** Writes a whole file, mode 0644 (launchd ignores group/world-writable plists). */
  readonly writeFile?: (path: string, text: string) => Promise<void>;
  /** `mkdir -p`, then chown to `owner` when given. */
  readonly makeDir?: (path: string, owner?: Owner) => Promise<void>;
  /** Removes a file; false when there was none. */
  readonly removeFile?: (path: string) => Promise<boolean>;
  readonly fileExists?: (path: string) => Promise<boolean>;
  /** Reads the env file (default Deno.readTextFile); a file it cannot read is not checked. */
  readonly readTextFile?: (path: string) => Promise<string>;
  /** Writes `text` as is; every call here passes whole lines. */
  readonly print: (text: string) => void;
}

export type UninstallOptions = Pick<
  InstallOptions,
  "daemon" | "dryRun" | "uid" | "home" | "os" | "runCommand" | "removeFile" | "fileExists" | "print"
>;

/**
 * The program launchd should run. Under a compiled binary `Deno.execPath()`
 * is that binary; under `deno run` it is Deno itself, which launchd would
 * start without the script, so then only an explicit `--program` will do.
 */
export function resolveProgramPath(
  execPath: string,
  options: { readonly override?: string; readonly cwd: string },
): { readonly path: string } | { readonly problem: string } {
  if (options.override !== undefined && options.override !== "") {
    return { path: resolve(options.cwd, options.override) };
  }
  if (/^deno(\.exe)?$/i.test(basename(execPath))) {
    return {
      problem: `install needs the compiled l2-uploader executable, but this is running under ` +
        `Deno (${execPath}), which launchd cannot start as the recorder. Build the executable ` +
        `with \`deno compile\` and run its \`install\`, or pass --program /path/to/l2-uploader.`,
    };
  }
  return { path: execPath };
}

/** Where the job's stdout/stderr go unless told otherwise; both places show in Console.app. */
export function defaultLogDir(daemon: boolean, home: string): string {
  return daemon ? "/Library/Logs/l2-uploader" : `${home}/Library/Logs/l2-uploader`;
}

/** The command-line flags main parses for install/uninstall. */
export interface InstallFlags {
  readonly daemon?: boolean;
  readonly "dry-run"?: boolean;
  readonly program?: string;
  readonly "env-file"?: string;
  readonly "log-dir"?: string;
}

/** What main reads from the process for install/uninstall; passed in so this stays pure. */
export interface InstallContext {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly cwd: string;
  /** `Deno.execPath()`. */
  readonly execPath: string;
  /** `Deno.uid()`. */
  readonly uid: number;
}

/**
 * Turns flags and the process context into install/uninstall options (all but
 * `print`): paths made absolute against the current directory, which becomes
 * the job's WorkingDirectory; under sudo, the daemon runs as the user who ran
 * sudo and its log directory is theirs.
 */
export function installOptionsFromCli(
  flags: InstallFlags,
  context: InstallContext,
): { readonly options: Omit<InstallOptions, "print"> } | { readonly problem: string } {
  const { env, cwd } = context;
  const daemon = flags.daemon ?? false;
  const dryRun = flags["dry-run"] ?? false;
  const program = resolveProgramPath(context.execPath, { override: flags.program, cwd });
  // A dry run under `deno run` still shows everything, with the path `deno compile` would use.
  if ("problem" in program && !dryRun) return program;
  const home = env.HOME ?? "";
  const sudoOwner = env.SUDO_UID && env.SUDO_GID
    ? { uid: Number(env.SUDO_UID), gid: Number(env.SUDO_GID) }
    : undefined;
  return {
    options: {
      daemon,
      dryRun,
      programPath: "path" in program ? program.path : resolve(cwd, "l2-uploader"),
      workingDirectory: cwd,
      envFile: resolve(cwd, flags["env-file"] ?? ".env"),
      logDir: flags["log-dir"] ? resolve(cwd, flags["log-dir"]) : defaultLogDir(daemon, home),
      userName: env.SUDO_USER || env.USER || "",
      uid: context.uid,
      home,
      ...(daemon && sudoOwner ? { logOwner: sudoOwner } : {}),
    },
  };
}

export async function install(options: InstallOptions): Promise<number> {
  const { print } = options;
  const kind: JobKind = options.daemon ? "daemon" : "agent";
  if (!onMacOrDryRun(options)) return 1;
  const xml = plistOf(options, kind);
  if (xml === undefined) return 1;
  const path = plistPath(kind, { home: options.home });
  const steps = installSteps(kind, { uid: options.uid, plistPath: path });
  const { problems, warnings } = await preflight(options, kind);

  if (options.dryRun) {
    printDryRun(options, { kind, path, xml, steps, problems, warnings });
    // As the install itself would: a problem is exit 1.
    return problems.length > 0 ? 1 : 0;
  }
  if (problems.length > 0) {
    for (const p of problems) print(`l2-uploader install: ${p}\n`);
    return 1;
  }
  for (const w of warnings) print(`warning: ${w}\n`);
  if (!await writeJob(options, { kind, path, xml })) return 1;

  const ok = await runSteps(steps, { run: options.runCommand ?? defaultRunCommand, print });
  if (!ok) {
    print(
      `l2-uploader install: launchctl could not load ${path}; the plist stays in place. ` +
        `See \`${shellJoin(printCommand(kind, options.uid))}\` and the system log.\n`,
    );
    return 1;
  }
  print(
    `installed ${LABELS[kind]}: it runs now and ` +
      `${options.daemon ? "at every boot" : "whenever you are logged in"}, ` +
      `restarted by launchd if it stops.\n` +
      `  logs:   ${options.logDir}\n` +
      `  state:  ${shellJoin(printCommand(kind, options.uid))}\n` +
      `  health: l2-uploader status\n`,
  );
  return 0;
}

/** The job's plist, or undefined (said why) when the options cannot make one. */
function plistOf(options: InstallOptions, kind: JobKind): string | undefined {
  const spec: JobSpec = {
    kind,
    programPath: options.programPath,
    workingDirectory: options.workingDirectory,
    envFile: options.envFile,
    logDir: options.logDir,
    ...(options.daemon ? { userName: options.userName, groupName: options.groupName } : {}),
  };
  try {
    return renderPlist(spec);
  } catch (error) {
    if (!(error instanceof LaunchdSpecError)) throw error;
    options.print(`l2-uploader install: cannot build the launchd plist:\n${error.message}\n`);
    return undefined;
  }
}

/**
 * Problems that would only show later as a job launchd restarts every 10 s,
 * and warnings that do not stop the install.
 */
async function preflight(
  options: InstallOptions,
  kind: JobKind,
): Promise<{ problems: string[]; warnings: string[] }> {
  const fileExists = options.fileExists ?? defaultFileExists;
  const problems = [...privilegeProblems(kind, options.uid)];
  if (!await fileExists(options.programPath)) {
    problems.push(`the program ${options.programPath} is not a file`);
  }
  if (!await fileExists(options.envFile)) {
    problems.push(
      `the env file ${options.envFile} is not a file; the job runs with --env-file and would ` +
        `stop at start-up (create it from .env.example, or pass --env-file)`,
    );
  }
  // The job's options: launchd gives it no variables of the user's shell, only the file.
  const paths = [options.programPath, options.workingDirectory, options.envFile];
  const envText = await (options.readTextFile ?? Deno.readTextFile)(options.envFile)
    .catch(() => undefined);
  if (envText !== undefined) {
    try {
      const config = parseConfig(parseEnvFile(envText));
      paths.push(resolve(options.workingDirectory, config.dataDir));
      if (config.logFile) paths.push(resolve(options.workingDirectory, config.logFile));
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      problems.push(
        `the env file ${options.envFile} has values the job would stop on at start-up:\n` +
          error.message,
      );
    }
  }
  const warnings = [...privacyWarnings(paths, options.home)];
  const other: JobKind = kind === "agent" ? "daemon" : "agent";
  const otherPath = plistPath(other, { home: options.home });
  if (await fileExists(otherPath)) {
    warnings.push(
      `the ${other} is installed too (${otherPath}); two recorders of the same streams store ` +
        `everything twice — uninstall one of them`,
    );
  }
  return { problems, warnings };
}

/** `--dry-run`: the problems, the warnings, the plist and every command, run nothing. */
function printDryRun(options: InstallOptions, plan: {
  kind: JobKind;
  path: string;
  xml: string;
  steps: readonly LaunchctlStep[];
  problems: readonly string[];
  warnings: readonly string[];
}): void {
  const { print } = options;
  const { kind, path } = plan;
  print(`# l2-uploader install --dry-run: nothing is written and no command is run.\n`);
  for (const p of plan.problems) print(`# problem: ${p}\n`);
  for (const w of plan.warnings) print(`# warning: ${w}\n`);
  print(`# ${path}:\n${plan.xml}`);
  print(`# commands:\n`);
  if (kind === "agent") print(`${shellJoin(["mkdir", "-p", dirname(path)])}\n`);
  print(`${shellJoin(["mkdir", "-p", options.logDir])}\n`);
  if (options.daemon && options.logOwner) {
    const { uid, gid } = options.logOwner;
    print(`${shellJoin(["chown", `${uid}:${gid}`, options.logDir])}\n`);
  }
  print(`# write the plist above to ${path} (mode 0644)\n`);
  printSteps(plan.steps, print);
}

/** Creates the directories and writes the plist; false (said why) when that failed. */
async function writeJob(
  options: InstallOptions,
  job: { kind: JobKind; path: string; xml: string },
): Promise<boolean> {
  const { print } = options;
  const writeFile = options.writeFile ?? defaultWriteFile;
  const makeDir = options.makeDir ?? defaultMakeDir;
  try {
    // A fresh account has no ~/Library/LaunchAgents yet.
    if (job.kind === "agent") await makeDir(dirname(job.path));
    await makeDir(options.logDir, options.daemon ? options.logOwner : undefined);
    print(`log directory ${options.logDir}\n`);
    await writeFile(job.path, job.xml);
    print(`wrote ${job.path}\n`);
    return true;
  } catch (error) {
    print(`l2-uploader install: ${(error as Error).message}\n`);
    return false;
  }
}

export async function uninstall(options: UninstallOptions): Promise<number> {
  const { print } = options;
  const kind: JobKind = options.daemon ? "daemon" : "agent";
  if (!onMacOrDryRun(options)) return 1;
  const path = plistPath(kind, { home: options.home });
  const steps = uninstallSteps(kind, { uid: options.uid, plistPath: path });
  const problems = privilegeProblems(kind, options.uid);

  if (options.dryRun) {
    print(`# l2-uploader uninstall --dry-run: nothing is removed and no command is run.\n`);
    for (const p of problems) print(`# problem: ${p}\n`);
    print(`# commands:\n`);
    printSteps(steps, print);
    print(`${shellJoin(["rm", "-f", path])}\n`);
    return 0;
  }
  if (problems.length > 0) {
    for (const p of problems) print(`l2-uploader uninstall: ${p}\n`);
    return 1;
  }

  const run = options.runCommand ?? defaultRunCommand;
  const fileExists = options.fileExists ?? defaultFileExists;
  // `unload -w` needs the file; without it only bootout by label can work.
  const hasPlist = await fileExists(path);
  const usable = hasPlist ? steps : steps.map(({ fallback: _, ...step }) => step);
  const unloaded = await runSteps(usable, { run, print, quiet: true });
  if (!unloaded) {
    // Both forms fail when the job is simply not loaded; tell that from a real failure.
    const stillLoaded = (await run(printCommand(kind, options.uid))).code === 0;
    if (stillLoaded) {
      print(
        `l2-uploader uninstall: ${serviceTarget(kind, options.uid)} is still loaded and ` +
          `launchctl would not unload it; ${path} is kept.\n`,
      );
      return 1;
    }
    print(`${LABELS[kind]} was not loaded\n`);
  }

  const removeFile = options.removeFile ?? defaultRemoveFile;
  try {
    print(await removeFile(path) ? `removed ${path}\n` : `no plist at ${path}\n`);
  } catch (error) {
    print(`l2-uploader uninstall: ${(error as Error).message}\n`);
    return 1;
  }
  print(`uninstalled ${LABELS[kind]}; logs and data are left where they are.\n`);
  return 0;
}

/** launchctl exists only on macOS; elsewhere only a dry run makes sense. */
function onMacOrDryRun(options: Pick<InstallOptions, "os" | "dryRun" | "print">): boolean {
  const os = options.os ?? Deno.build.os;
  if (os === "darwin" || options.dryRun) return true;
  options.print(
    `l2-uploader: launchd exists only on macOS, and this is ${os}. ` +
      `Use --dry-run to see the plist and the launchctl commands.\n`,
  );
  return false;
}

function privilegeProblems(kind: JobKind, uid: number): string[] {
  if (kind === "daemon" && uid !== 0) {
    return [
      "a LaunchDaemon is installed in /Library/LaunchDaemons and loaded into the system " +
      "domain, which needs root: run it with sudo",
    ];
  }
  if (kind === "agent" && uid === 0) {
    return [
      "this is root: a LaunchAgent belongs to a logged-in user, so run install without sudo, " +
      "or use --daemon for a system-wide job",
    ];
  }
  return [];
}

/**
 * macOS privacy protection (TCC) keeps launchd jobs out of Desktop, Documents
 * and Downloads unless granted Full Disk Access; the job would then fail with
 * "Operation not permitted" although the same command works in a terminal.
 */
function privacyWarnings(paths: readonly string[], home: string): string[] {
  const protectedDirs = ["Desktop", "Documents", "Downloads"].map((d) => `${home}/${d}/`);
  return paths
    .filter((p) => protectedDirs.some((dir) => p.startsWith(dir)))
    .map((p) =>
      `${p} is in a folder macOS guards from background jobs; move it (e.g. to ` +
      `~/l2-uploader) or give the program Full Disk Access`
    );
}

function printSteps(steps: readonly LaunchctlStep[], print: (text: string) => void): void {
  for (const step of steps) {
    print(`# ${step.why}\n${shellJoin(step.argv)}\n`);
    if (step.fallback) print(`# if that fails:\n${shellJoin(step.fallback)}\n`);
  }
}

/** Runs each step, its fallback on failure; false when a required step failed both ways. */
async function runSteps(
  steps: readonly LaunchctlStep[],
  options: { run: RunCommand; print: (text: string) => void; quiet?: boolean },
): Promise<boolean> {
  const { run, print } = options;
  for (const step of steps) {
    const first = await run(step.argv);
    if (first.code === 0) {
      print(`ran ${shellJoin(step.argv)}\n`);
      continue;
    }
    if (step.optional) continue;
    const failure = describeFailure(step.argv, first);
    if (!step.fallback) {
      if (!options.quiet) print(`${failure}\n`);
      return false;
    }
    const second = await run(step.fallback);
    if (second.code === 0) {
      print(`ran ${shellJoin(step.fallback)} (${failure})\n`);
      continue;
    }
    if (!options.quiet) print(`${failure}\n${describeFailure(step.fallback, second)}\n`);
    return false;
  }
  return true;
}

function describeFailure(argv: readonly string[], result: CommandResult): string {
  const detail = result.stderr.trim();
  return `${shellJoin(argv)} failed (exit ${result.code})${detail ? `: ${detail}` : ""}`;
}

async function defaultRunCommand(argv: string[]): Promise<CommandResult> {
  const [command, ...args] = argv;
  try {
    const output = await new Deno.Command(command, { args, stdout: "null", stderr: "piped" })
      .output();
    return { code: output.code, stderr: new TextDecoder().decode(output.stderr) };
  } catch (error) {
    // launchctl missing or not runnable: a failed step, not a crash.
    return { code: 127, stderr: (error as Error).message };
  }
}

async function defaultWriteFile(path: string, text: string): Promise<void> {
  await Deno.writeTextFile(path, text, { mode: 0o644 });
  // `mode` applies only when the file is created; an older copy keeps its own.
  await Deno.chmod(path, 0o644);
}

async function defaultMakeDir(path: string, owner?: Owner): Promise<void> {
  await Deno.mkdir(path, { recursive: true, mode: 0o755 });
  if (owner) await Deno.chown(path, owner.uid, owner.gid);
}

async function defaultRemoveFile(path: string): Promise<boolean> {
  try {
    await Deno.remove(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** A file (not a directory: `--env-file=` names the working directory itself) is at `path`. */
async function defaultFileExists(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}
