/**
 * Tests for src/ops/launchd.ts and src/cli/install.ts: the rendered plist
 * parses back to the intended job, escapes XML, differs between agent and
 * daemon only where it should, matches the committed examples in launchd/,
 * survives plistutil; install/uninstall print, write and call launchctl as
 * intended, with launchd replaced by recording fakes.
 *
 * `deno test -A tests/launchd_test.ts -- --update` rewrites launchd/*.plist.
 */

import assert from "node:assert/strict";
import * as plist from "plist";
import {
  install,
  type InstallOptions,
  installOptionsFromCli,
  type Owner,
  resolveProgramPath,
  type RunCommand,
  uninstall,
} from "../src/cli/install.ts";
import {
  DEFAULT_PATH,
  EXAMPLE_PATHS,
  examplePlists,
  installSteps,
  type JobSpec,
  launchdJob,
  LaunchdSpecError,
  plistPath,
  renderPlist,
  shellJoin,
  uninstallSteps,
} from "../src/ops/launchd.ts";
import { tempDir } from "./support/temp.ts";

const LAUNCHD_DIR = new URL("../launchd/", import.meta.url);

const agentSpec: JobSpec = {
  kind: "agent",
  programPath: "/Users/alice/bin/l2-uploader",
  workingDirectory: "/Users/alice/l2",
  envFile: "/Users/alice/l2/.env",
  logDir: "/Users/alice/Library/Logs/l2-uploader",
};

const daemonSpec: JobSpec = {
  ...agentSpec,
  kind: "daemon",
  userName: "alice",
  groupName: "staff",
  logDir: "/Library/Logs/l2-uploader",
};

function hasCommand(name: string): boolean {
  try {
    new Deno.Command(name, { args: ["--version"], stdout: "null", stderr: "null" }).outputSync();
    return true;
  } catch {
    return false;
  }
}

const hasPlistutil = hasCommand("plistutil");
if (!hasPlistutil) {
  // deno-lint-ignore no-console
  console.warn(
    "launchd_test: plistutil is not on PATH, so the plistutil validation test is ignored " +
      "(apt-get install libplist-utils to run it)",
  );
}

Deno.test("the agent plist parses back to the job: absolute paths, RunAtLoad, KeepAlive", () => {
  const parsed = plist.parse(renderPlist(agentSpec));
  assert.deepEqual(parsed, {
    Label: "com.l2uploader.agent",
    ProgramArguments: ["/Users/alice/bin/l2-uploader", "run", "--env-file", "/Users/alice/l2/.env"],
    WorkingDirectory: "/Users/alice/l2",
    EnvironmentVariables: { PATH: DEFAULT_PATH },
    RunAtLoad: true,
    KeepAlive: true,
    ThrottleInterval: 10,
    ExitTimeOut: 30,
    ProcessType: "Interactive",
    SoftResourceLimits: { NumberOfFiles: 4096 },
    StandardOutPath: "/Users/alice/Library/Logs/l2-uploader/l2-uploader.out.log",
    StandardErrorPath: "/Users/alice/Library/Logs/l2-uploader/l2-uploader.err.log",
  });
});

Deno.test("no plist carries a secret-looking environment variable", () => {
  const secretName = /SECRET|TOKEN|PASSWORD|KEY|CREDENTIAL|WEBHOOK|AWS_/i;
  for (const xml of [renderPlist(agentSpec), renderPlist(daemonSpec), ...exampleXml()]) {
    const job = plist.parse(xml) as { EnvironmentVariables: Record<string, string> };
    assert.deepEqual(Object.keys(job.EnvironmentVariables), ["PATH"]);
    for (const name of Object.keys(job.EnvironmentVariables)) {
      assert.doesNotMatch(name, secretName);
    }
  }
});

Deno.test("launchdJob refuses secret-looking variables without echoing their values", () => {
  for (
    const name of ["AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "ALERT_WEBHOOK_URL", "API_TOKEN"]
  ) {
    assert.throws(
      () => launchdJob({ ...agentSpec, environment: { PATH: "/bin", [name]: "hunter2" } }),
      (error: unknown) =>
        error instanceof LaunchdSpecError && error.message.includes(name) &&
        !error.message.includes("hunter2"),
    );
  }
});

Deno.test("launchdJob refuses relative paths and a daemon without a user, all at once", () => {
  assert.throws(
    () =>
      launchdJob({
        kind: "daemon",
        programPath: "l2-uploader",
        workingDirectory: ".",
        envFile: ".env",
        logDir: "logs",
      }),
    (error: unknown) => {
      assert.ok(error instanceof LaunchdSpecError);
      for (const word of ["programPath", "workingDirectory", "envFile", "logDir", "userName"]) {
        assert.match(error.message, new RegExp(word));
      }
      return true;
    },
  );
});

Deno.test("launchdJob refuses a daemon run as root (install --daemon from a root shell, no SUDO_USER)", () => {
  assert.throws(
    () =>
      launchdJob({
        kind: "daemon",
        programPath: "/usr/local/bin/l2-uploader",
        workingDirectory: "/var/lib/l2",
        envFile: "/var/lib/l2/.env",
        logDir: "/var/log/l2",
        userName: "root",
      }),
    (error: unknown) => error instanceof LaunchdSpecError && /not as root/.test(error.message),
  );
});

Deno.test("XML special characters in paths are escaped and read back unchanged", () => {
  const odd = "/Users/a&b/<l2> \"x\" 'y'";
  const spec: JobSpec = {
    ...agentSpec,
    programPath: `${odd}/l2-uploader`,
    workingDirectory: odd,
    envFile: `${odd}/.env`,
    logDir: `${odd}/logs`,
  };
  const xml = renderPlist(spec);
  assert.match(xml, /a&amp;b\/&lt;l2&gt;/);
  assert.doesNotMatch(xml, /a&b/);
  assert.doesNotMatch(xml, /<l2>/);
  const job = plist.parse(xml) as { ProgramArguments: string[]; WorkingDirectory: string };
  assert.deepEqual(job.ProgramArguments, [
    `${odd}/l2-uploader`,
    "run",
    "--env-file",
    `${odd}/.env`,
  ]);
  assert.equal(job.WorkingDirectory, odd);
});

Deno.test("agent and daemon differ only in Label, UserName/GroupName and their places", () => {
  const agent = launchdJob({ ...daemonSpec, kind: "agent" });
  const daemon = launchdJob(daemonSpec);
  assert.equal(agent.Label, "com.l2uploader.agent");
  assert.equal(daemon.Label, "com.l2uploader.daemon");
  assert.equal(agent.UserName, undefined);
  assert.equal(agent.GroupName, undefined);
  assert.equal(daemon.UserName, "alice");
  assert.equal(daemon.GroupName, "staff");
  const { Label: _a, ...agentRest } = agent;
  const { Label: _d, UserName: _u, GroupName: _g, ...daemonRest } = daemon;
  assert.deepEqual(agentRest, daemonRest);
  assert.equal(launchdJob({ ...daemonSpec, groupName: undefined }).GroupName, undefined);

  assert.equal(
    plistPath("agent", { home: "/Users/alice" }),
    "/Users/alice/Library/LaunchAgents/com.l2uploader.agent.plist",
  );
  assert.equal(
    plistPath("daemon", { home: "/Users/alice" }),
    "/Library/LaunchDaemons/com.l2uploader.daemon.plist",
  );
});

Deno.test("launchctl lines: agent in gui/<uid>, daemon in system, each with its legacy fallback", () => {
  const agentPlist = "/Users/alice/Library/LaunchAgents/com.l2uploader.agent.plist";
  const agent = installSteps("agent", { uid: 501, plistPath: agentPlist });
  assert.deepEqual(agent.map((s) => s.argv), [
    ["launchctl", "bootout", "gui/501/com.l2uploader.agent"],
    ["launchctl", "enable", "gui/501/com.l2uploader.agent"],
    ["launchctl", "bootstrap", "gui/501", agentPlist],
  ]);
  assert.deepEqual(agent.map((s) => s.optional), [true, true, false]);
  assert.deepEqual(agent[2].fallback, ["launchctl", "load", "-w", agentPlist]);

  const daemonPlist = "/Library/LaunchDaemons/com.l2uploader.daemon.plist";
  const daemon = installSteps("daemon", { uid: 0, plistPath: daemonPlist });
  assert.deepEqual(daemon[2].argv, ["launchctl", "bootstrap", "system", daemonPlist]);
  assert.deepEqual(daemon[0].argv, ["launchctl", "bootout", "system/com.l2uploader.daemon"]);

  const removal = uninstallSteps("agent", { uid: 501, plistPath: agentPlist });
  assert.deepEqual(removal.map((s) => [s.argv, s.fallback]), [[
    ["launchctl", "bootout", "gui/501/com.l2uploader.agent"],
    ["launchctl", "unload", "-w", agentPlist],
  ]]);
  assert.deepEqual(uninstallSteps("daemon", { uid: 0, plistPath: daemonPlist })[0].argv, [
    "launchctl",
    "bootout",
    "system/com.l2uploader.daemon",
  ]);
});

Deno.test("shellJoin quotes only what a shell would misread", () => {
  assert.equal(shellJoin(["launchctl", "print", "gui/501/x.y"]), "launchctl print gui/501/x.y");
  assert.equal(shellJoin(["rm", "/a b/it's"]), `rm '/a b/it'\\''s'`);
});

Deno.test("the committed plists in launchd/ equal the rendering with the example paths", async () => {
  const expected = examplePlists();
  if (Deno.args.includes("--update")) {
    for (const [name, xml] of Object.entries(expected)) {
      await Deno.writeTextFile(new URL(name, LAUNCHD_DIR), xml);
    }
  }
  const committed: string[] = [];
  for await (const entry of Deno.readDir(LAUNCHD_DIR)) {
    if (entry.name.endsWith(".plist")) committed.push(entry.name);
  }
  assert.deepEqual(committed.sort(), Object.keys(expected).sort());
  for (const [name, xml] of Object.entries(expected)) {
    assert.equal(
      await Deno.readTextFile(new URL(name, LAUNCHD_DIR)),
      xml,
      `launchd/${name} is stale: run deno test -A tests/launchd_test.ts -- --update`,
    );
  }
  const daemon = plist.parse(expected["com.l2uploader.daemon.plist"]) as Record<string, unknown>;
  assert.equal(daemon.UserName, EXAMPLE_PATHS.userName);
  assert.equal(daemon.WorkingDirectory, EXAMPLE_PATHS.workingDirectory);
});

Deno.test({
  name: "plistutil converts every plist to binary and back without a change",
  ignore: !hasPlistutil,
  async fn() {
    await using tmp = await tempDir();
    const files: string[] = [];
    for await (const entry of Deno.readDir(LAUNCHD_DIR)) {
      if (entry.name.endsWith(".plist")) files.push(new URL(entry.name, LAUNCHD_DIR).pathname);
    }
    const odd = `${tmp.path}/odd.plist`;
    await Deno.writeTextFile(
      odd,
      renderPlist({ ...daemonSpec, workingDirectory: "/srv/a&b/<c>", envFile: "/srv/é/.env" }),
    );
    files.push(odd);
    assert.ok(files.length >= 3);
    for (const file of files) {
      const binary = `${tmp.path}/out.bplist`;
      const back = `${tmp.path}/back.plist`;
      await plistutil(["-i", file, "-o", binary, "-f", "bin"]);
      const bytes = await Deno.readFile(binary);
      assert.equal(new TextDecoder().decode(bytes.subarray(0, 8)), "bplist00", file);
      await plistutil(["-i", binary, "-o", back, "-f", "xml"]);
      const original = plist.parse(await Deno.readTextFile(file));
      assert.deepEqual(plist.parse(await Deno.readTextFile(back)), original, file);
      assert.deepEqual(plist.parseBinary(bytes), original, file);
    }
  },
});

async function plistutil(args: string[]): Promise<void> {
  const out = await new Deno.Command("plistutil", { args, stdout: "piped", stderr: "piped" })
    .output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `plistutil ${args.join(" ")} failed: ${stderr}`);
}

// --- install / uninstall with recording fakes ---------------------------------------------------

interface Fakes {
  readonly options: InstallOptions;
  readonly commands: string[][];
  readonly files: Map<string, string>;
  readonly dirs: { path: string; owner?: Owner }[];
  readonly removed: string[];
  output(): string;
}

/** Options for install/uninstall whose launchctl fails for argv starting with any of `failing`. */
function fakes(
  overrides: Partial<InstallOptions> = {},
  behaviour: { failing?: string[][]; existing?: string[] } = {},
): Fakes {
  const commands: string[][] = [];
  const files = new Map<string, string>();
  const dirs: { path: string; owner?: Owner }[] = [];
  const removed: string[] = [];
  const printed: string[] = [];
  const existing = new Set(
    behaviour.existing ?? ["/Users/alice/bin/l2-uploader", "/Users/alice/l2/.env"],
  );
  const runCommand: RunCommand = (argv) => {
    commands.push(argv);
    const fails = (behaviour.failing ?? []).some((prefix) =>
      prefix.every((word, i) => argv[i] === word)
    );
    return Promise.resolve(
      fails ? { code: 5, stderr: "Input/output error\n" } : { code: 0, stderr: "" },
    );
  };
  const options: InstallOptions = {
    daemon: false,
    dryRun: false,
    programPath: "/Users/alice/bin/l2-uploader",
    workingDirectory: "/Users/alice/l2",
    envFile: "/Users/alice/l2/.env",
    logDir: "/Users/alice/Library/Logs/l2-uploader",
    userName: "alice",
    uid: 501,
    home: "/Users/alice",
    os: "darwin",
    runCommand,
    writeFile: (path, text) => {
      files.set(path, text);
      existing.add(path);
      return Promise.resolve();
    },
    makeDir: (path, owner) => {
      dirs.push(owner ? { path, owner } : { path });
      return Promise.resolve();
    },
    removeFile: (path) => {
      removed.push(path);
      return Promise.resolve(existing.delete(path));
    },
    fileExists: (path) => Promise.resolve(existing.has(path)),
    print: (text) => printed.push(text),
    ...overrides,
  };
  return { options, commands, files, dirs, removed, output: () => printed.join("") };
}

const AGENT_PLIST = "/Users/alice/Library/LaunchAgents/com.l2uploader.agent.plist";
const DAEMON_PLIST = "/Library/LaunchDaemons/com.l2uploader.daemon.plist";

Deno.test("install --dry-run prints the plist and the exact commands, and touches nothing", async () => {
  const f = fakes({ dryRun: true, os: "linux" });
  assert.equal(await install(f.options), 0);
  const out = f.output();
  assert.ok(out.includes(renderPlist(agentSpec)), out);
  assert.ok(out.includes(AGENT_PLIST));
  for (
    const line of [
      "mkdir -p /Users/alice/Library/LaunchAgents",
      "mkdir -p /Users/alice/Library/Logs/l2-uploader",
      "launchctl bootout gui/501/com.l2uploader.agent",
      "launchctl enable gui/501/com.l2uploader.agent",
      `launchctl bootstrap gui/501 ${AGENT_PLIST}`,
      `launchctl load -w ${AGENT_PLIST}`,
    ]
  ) {
    assert.ok(out.split("\n").includes(line), `missing line "${line}" in:\n${out}`);
  }
  assert.deepEqual(f.commands, []);
  assert.equal(f.files.size, 0);
  assert.deepEqual(f.dirs, []);
});

Deno.test("install --dry-run --daemon shows the system domain and the log directory owner", async () => {
  const f = fakes({
    daemon: true,
    dryRun: true,
    uid: 0,
    logDir: "/Library/Logs/l2-uploader",
    logOwner: { uid: 501, gid: 20 },
  });
  assert.equal(await install(f.options), 0);
  const out = f.output();
  assert.ok(out.includes(`launchctl bootstrap system ${DAEMON_PLIST}\n`), out);
  assert.ok(out.includes("chown 501:20 /Library/Logs/l2-uploader\n"), out);
  assert.match(out, /<key>UserName<\/key>\s*<string>alice<\/string>/);
  assert.deepEqual(f.commands, []);
});

Deno.test("install refuses off macOS unless it is a dry run", async () => {
  const f = fakes({ os: "linux" });
  assert.equal(await install(f.options), 1);
  assert.match(f.output(), /only on macOS.*linux.*--dry-run/s);
  assert.deepEqual(f.commands, []);
  assert.equal(f.files.size, 0);

  const u = fakes({ os: "linux" });
  assert.equal(await uninstall(u.options), 1);
  assert.match(u.output(), /only on macOS/);
});

Deno.test("install writes the agent plist into ~/Library/LaunchAgents and bootstraps it", async () => {
  const f = fakes();
  assert.equal(await install(f.options), 0);
  assert.deepEqual([...f.files.keys()], [AGENT_PLIST]);
  assert.equal(f.files.get(AGENT_PLIST), renderPlist(agentSpec));
  assert.deepEqual(f.dirs, [
    { path: "/Users/alice/Library/LaunchAgents" },
    { path: "/Users/alice/Library/Logs/l2-uploader" },
  ]);
  assert.deepEqual(f.commands, [
    ["launchctl", "bootout", "gui/501/com.l2uploader.agent"],
    ["launchctl", "enable", "gui/501/com.l2uploader.agent"],
    ["launchctl", "bootstrap", "gui/501", AGENT_PLIST],
  ]);
  assert.match(f.output(), new RegExp(`wrote ${AGENT_PLIST}`));
  assert.match(f.output(), /installed com\.l2uploader\.agent/);
});

Deno.test("install falls back to launchctl load -w when bootstrap fails", async () => {
  // bootout fails too, as it does when nothing was loaded: that must not matter.
  const f = fakes({}, { failing: [["launchctl", "bootstrap"], ["launchctl", "bootout"]] });
  assert.equal(await install(f.options), 0);
  assert.deepEqual(f.commands.slice(2), [
    ["launchctl", "bootstrap", "gui/501", AGENT_PLIST],
    ["launchctl", "load", "-w", AGENT_PLIST],
  ]);
  assert.match(f.output(), /ran launchctl load -w .*bootstrap .*failed \(exit 5\)/);
});

Deno.test("install exits 1 and says so when bootstrap and load -w both fail", async () => {
  const f = fakes({}, { failing: [["launchctl", "bootstrap"], ["launchctl", "load"]] });
  assert.equal(await install(f.options), 1);
  assert.match(f.output(), /load -w .* failed \(exit 5\): Input\/output error/);
  assert.match(f.output(), /could not load/);
  assert.ok(f.files.has(AGENT_PLIST), "the plist stays for a retry");
});

Deno.test("install refuses when the program or the env file is missing", async () => {
  const f = fakes({}, { existing: [] });
  assert.equal(await install(f.options), 1);
  assert.match(f.output(), /program \/Users\/alice\/bin\/l2-uploader is not a file/);
  assert.match(f.output(), /env file \/Users\/alice\/l2\/\.env is not a file/);
  assert.deepEqual(f.commands, []);
  assert.equal(f.files.size, 0);
});

Deno.test("install refuses relative paths with a readable message", async () => {
  const f = fakes({ envFile: ".env" });
  assert.equal(await install(f.options), 1);
  assert.match(f.output(), /envFile must be an absolute path/);
  assert.deepEqual(f.commands, []);
});

Deno.test("install --daemon needs root", async () => {
  const f = fakes({ daemon: true });
  assert.equal(await install(f.options), 1);
  assert.match(f.output(), /needs root: run it with sudo/);
  assert.deepEqual(f.commands, []);
  assert.equal(f.files.size, 0);
});

Deno.test("install of the agent refuses to run as root", async () => {
  const f = fakes({ uid: 0 });
  assert.equal(await install(f.options), 1);
  assert.match(f.output(), /without sudo, or use --daemon/);
});

Deno.test("install --daemon as root writes /Library/LaunchDaemons and bootstraps into system", async () => {
  const f = fakes({
    daemon: true,
    uid: 0,
    logDir: "/Library/Logs/l2-uploader",
    logOwner: { uid: 501, gid: 20 },
  });
  assert.equal(await install(f.options), 0);
  assert.deepEqual([...f.files.keys()], [DAEMON_PLIST]);
  const job = plist.parse(f.files.get(DAEMON_PLIST)!) as Record<string, unknown>;
  assert.equal(job.UserName, "alice");
  assert.equal(job.Label, "com.l2uploader.daemon");
  assert.deepEqual(f.dirs, [{ path: "/Library/Logs/l2-uploader", owner: { uid: 501, gid: 20 } }]);
  assert.deepEqual(f.commands.at(-1), ["launchctl", "bootstrap", "system", DAEMON_PLIST]);
  assert.match(f.output(), /at every boot/);
});

Deno.test("install warns when the other kind is installed too", async () => {
  const f = fakes({}, {
    existing: ["/Users/alice/bin/l2-uploader", "/Users/alice/l2/.env", DAEMON_PLIST],
  });
  assert.equal(await install(f.options), 0);
  assert.match(f.output(), /warning: the daemon is installed too/);
});

Deno.test("install warns about folders macOS keeps from background jobs", async () => {
  const f = fakes({ dryRun: true, workingDirectory: "/Users/alice/Documents/l2" });
  assert.equal(await install(f.options), 0);
  assert.match(f.output(), /warning: \/Users\/alice\/Documents\/l2 is in a folder macOS guards/);
});

Deno.test("uninstall boots the agent out and removes its plist", async () => {
  const f = fakes({}, { existing: [AGENT_PLIST] });
  assert.equal(await uninstall(f.options), 0);
  assert.deepEqual(f.commands, [["launchctl", "bootout", "gui/501/com.l2uploader.agent"]]);
  assert.deepEqual(f.removed, [AGENT_PLIST]);
  assert.match(f.output(), /removed .*com\.l2uploader\.agent\.plist/);
});

Deno.test("uninstall falls back to unload -w when bootout fails", async () => {
  const f = fakes({}, { existing: [AGENT_PLIST], failing: [["launchctl", "bootout"]] });
  assert.equal(await uninstall(f.options), 0);
  assert.deepEqual(f.commands, [
    ["launchctl", "bootout", "gui/501/com.l2uploader.agent"],
    ["launchctl", "unload", "-w", AGENT_PLIST],
  ]);
  assert.deepEqual(f.removed, [AGENT_PLIST]);
});

Deno.test("uninstall of a job that is not loaded still removes the plist", async () => {
  const f = fakes({}, {
    existing: [AGENT_PLIST],
    failing: [["launchctl", "bootout"], ["launchctl", "unload"], ["launchctl", "print"]],
  });
  assert.equal(await uninstall(f.options), 0);
  assert.match(f.output(), /was not loaded/);
  assert.deepEqual(f.removed, [AGENT_PLIST]);
});

Deno.test("uninstall keeps the plist and exits 1 when the job stays loaded", async () => {
  const f = fakes({}, {
    existing: [AGENT_PLIST],
    failing: [["launchctl", "bootout"], ["launchctl", "unload"]],
  });
  assert.equal(await uninstall(f.options), 1);
  assert.deepEqual(f.commands.at(-1), ["launchctl", "print", "gui/501/com.l2uploader.agent"]);
  assert.deepEqual(f.removed, []);
  assert.match(f.output(), /still loaded/);
});

Deno.test("uninstall --daemon needs root and uses the system domain", async () => {
  const user = fakes({ daemon: true });
  assert.equal(await uninstall(user.options), 1);
  assert.match(user.output(), /needs root/);

  const root = fakes({ daemon: true, uid: 0 }, { existing: [DAEMON_PLIST] });
  assert.equal(await uninstall(root.options), 0);
  assert.deepEqual(root.commands, [["launchctl", "bootout", "system/com.l2uploader.daemon"]]);
  assert.deepEqual(root.removed, [DAEMON_PLIST]);
});

Deno.test("uninstall --dry-run prints the commands and removes nothing", async () => {
  const f = fakes({ dryRun: true, os: "linux" }, { existing: [AGENT_PLIST] });
  assert.equal(await uninstall(f.options), 0);
  const lines = f.output().split("\n");
  assert.ok(lines.includes("launchctl bootout gui/501/com.l2uploader.agent"));
  assert.ok(lines.includes(`launchctl unload -w ${AGENT_PLIST}`));
  assert.ok(lines.includes(`rm -f ${AGENT_PLIST}`));
  assert.deepEqual(f.commands, []);
  assert.deepEqual(f.removed, []);
});

Deno.test("install then uninstall with the real file writer leaves a 0644 plist, then none", async () => {
  await using tmp = await tempDir();
  const home = `${tmp.path}/home`;
  const work = `${tmp.path}/work`;
  await Deno.mkdir(work, { recursive: true });
  await Deno.writeTextFile(`${work}/.env`, "SYMBOL=BTCUSDT\n");
  await Deno.writeTextFile(`${work}/l2-uploader`, "");
  const commands: string[][] = [];
  const printed: string[] = [];
  const common = {
    daemon: false,
    dryRun: false,
    uid: 501,
    home,
    os: "darwin" as const,
    runCommand: (argv: string[]) => {
      commands.push(argv);
      return Promise.resolve({ code: 0, stderr: "" });
    },
    print: (text: string) => printed.push(text),
  };
  const code = await install({
    ...common,
    programPath: `${work}/l2-uploader`,
    workingDirectory: work,
    envFile: `${work}/.env`,
    logDir: `${home}/Library/Logs/l2-uploader`,
    userName: "alice",
  });
  assert.equal(code, 0, printed.join(""));
  const path = `${home}/Library/LaunchAgents/com.l2uploader.agent.plist`;
  assert.equal((await Deno.stat(path)).mode! & 0o777, 0o644);
  assert.ok((await Deno.stat(`${home}/Library/Logs/l2-uploader`)).isDirectory);
  const job = plist.parse(await Deno.readTextFile(path)) as Record<string, unknown>;
  assert.equal(job.WorkingDirectory, work);

  assert.equal(await uninstall(common), 0, printed.join(""));
  await assert.rejects(Deno.stat(path), Deno.errors.NotFound);
  assert.equal(await uninstall(common), 0, "a second uninstall is harmless");
});

Deno.test("resolveProgramPath: the compiled binary, an override, or a clear refusal under deno", () => {
  assert.deepEqual(resolveProgramPath("/usr/local/bin/l2-uploader", { cwd: "/x" }), {
    path: "/usr/local/bin/l2-uploader",
  });
  assert.deepEqual(
    resolveProgramPath("/usr/local/bin/deno", {
      cwd: "/Users/alice/l2",
      override: "./l2-uploader",
    }),
    { path: "/Users/alice/l2/l2-uploader" },
  );
  const refused = resolveProgramPath("/Users/alice/.deno/bin/deno", { cwd: "/x" });
  assert.ok("problem" in refused);
  assert.match(refused.problem, /deno compile.*--program/s);
});

Deno.test("installOptionsFromCli resolves paths against the current directory", () => {
  const context = {
    env: { HOME: "/Users/alice", USER: "alice" },
    cwd: "/Users/alice/l2",
    execPath: "/usr/local/bin/l2-uploader",
    uid: 501,
  };
  assert.deepEqual(installOptionsFromCli({ "env-file": "conf/.env" }, context), {
    options: {
      daemon: false,
      dryRun: false,
      programPath: "/usr/local/bin/l2-uploader",
      workingDirectory: "/Users/alice/l2",
      envFile: "/Users/alice/l2/conf/.env",
      logDir: "/Users/alice/Library/Logs/l2-uploader",
      userName: "alice",
      uid: 501,
      home: "/Users/alice",
    },
  });
});

Deno.test("installOptionsFromCli under sudo --daemon runs the job as the sudo user", () => {
  const resolved = installOptionsFromCli({ daemon: true, "log-dir": "logs" }, {
    env: {
      HOME: "/Users/alice",
      USER: "root",
      SUDO_USER: "alice",
      SUDO_UID: "501",
      SUDO_GID: "20",
    },
    cwd: "/srv/l2",
    execPath: "/usr/local/bin/l2-uploader",
    uid: 0,
  });
  assert.ok("options" in resolved);
  assert.equal(resolved.options.userName, "alice");
  assert.equal(resolved.options.uid, 0);
  assert.equal(resolved.options.logDir, "/srv/l2/logs");
  assert.equal(resolved.options.envFile, "/srv/l2/.env");
  assert.deepEqual(resolved.options.logOwner, { uid: 501, gid: 20 });
});

Deno.test("installOptionsFromCli under deno refuses, except for a dry run", () => {
  const context = { env: { HOME: "/h" }, cwd: "/w", execPath: "/h/.deno/bin/deno", uid: 501 };
  const refused = installOptionsFromCli({}, context);
  assert.ok("problem" in refused);
  assert.match(refused.problem, /--program/);
  const dry = installOptionsFromCli({ "dry-run": true }, context);
  assert.ok("options" in dry);
  assert.equal(dry.options.programPath, "/w/l2-uploader");
  const chosen = installOptionsFromCli({ program: "bin/l2-uploader" }, context);
  assert.ok("options" in chosen);
  assert.equal(chosen.options.programPath, "/w/bin/l2-uploader");
});

function exampleXml(): string[] {
  return Object.values(examplePlists());
}

/**
 * launchd's documented keys (launchd.plist(5), "XML PROPERTY LIST KEYS"), each
 * with the type the manual gives it. Written from the manual, not from our
 * renderer: a committed plist with a key launchd does not know, or with the
 * wrong type, is refused or silently ignored by launchd.
 */
const LAUNCHD_KEYS: Record<
  string,
  "string" | "boolean" | "integer" | "array" | "dict" | "bool|dict"
> = {
  Label: "string",
  Disabled: "boolean",
  UserName: "string",
  GroupName: "string",
  Program: "string",
  ProgramArguments: "array",
  EnableGlobbing: "boolean",
  KeepAlive: "bool|dict",
  RunAtLoad: "boolean",
  RootDirectory: "string",
  WorkingDirectory: "string",
  EnvironmentVariables: "dict",
  Umask: "integer",
  TimeOut: "integer",
  ExitTimeOut: "integer",
  ThrottleInterval: "integer",
  StartInterval: "integer",
  StandardInPath: "string",
  StandardOutPath: "string",
  StandardErrorPath: "string",
  Debug: "boolean",
  SoftResourceLimits: "dict",
  HardResourceLimits: "dict",
  Nice: "integer",
  ProcessType: "string",
  AbandonProcessGroup: "boolean",
  LowPriorityIO: "boolean",
  LowPriorityBackgroundIO: "boolean",
  LimitLoadToSessionType: "string",
};
/** launchd.plist(5): the values ProcessType accepts. */
const PROCESS_TYPES = ["Background", "Standard", "Adaptive", "Interactive"];
/** launchd.plist(5): the conditions a KeepAlive dictionary may name. */
const KEEPALIVE_KEYS = [
  "SuccessfulExit",
  "NetworkState",
  "PathState",
  "OtherJobEnabled",
  "Crashed",
  "AfterInitialDemand",
];

/** launchd.plist(5): the keys of SoftResourceLimits and HardResourceLimits. */
const RESOURCE_LIMIT_KEYS = [
  "Core",
  "CPU",
  "Data",
  "FileSize",
  "MemoryLock",
  "NumberOfFiles",
  "NumberOfProcesses",
  "ResidentSetSize",
  "Stack",
];

function typeOf(value: unknown): string {
  if (typeof value === "string") return "string";
  if (typeof value === "boolean") return "boolean";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "real";
  if (Array.isArray(value)) return "array";
  return value !== null && typeof value === "object" ? "dict" : String(value);
}

Deno.test("the committed plists use only keys and types launchd.plist(5) documents", async () => {
  for await (const entry of Deno.readDir(LAUNCHD_DIR)) {
    if (!entry.name.endsWith(".plist")) continue;
    const parsed = plist.parse(
      await Deno.readTextFile(new URL(entry.name, LAUNCHD_DIR)),
    ) as Record<string, unknown>;
    for (const [key, value] of Object.entries(parsed)) {
      const want = LAUNCHD_KEYS[key];
      assert.ok(want !== undefined, `${entry.name}: ${key} is not a launchd.plist(5) key`);
      const got = typeOf(value);
      const ok = want === "bool|dict" ? got === "boolean" || got === "dict" : got === want;
      assert.ok(ok, `${entry.name}: ${key} is a ${got}, launchd.plist(5) wants ${want}`);
    }
    // Required: a Label, equal to the file name launchd looks it up by, and a program.
    assert.equal(`${parsed.Label}.plist`, entry.name);
    const argv = parsed.ProgramArguments as unknown[];
    assert.ok(argv.length >= 1 && argv.every((a) => typeof a === "string"));
    assert.ok(String(argv[0]).startsWith("/"), "launchd does not search PATH for the program");
    for (const key of ["WorkingDirectory", "StandardOutPath", "StandardErrorPath"]) {
      if (key in parsed) assert.ok(String(parsed[key]).startsWith("/"), `${key} must be absolute`);
    }
    if ("ProcessType" in parsed) {
      assert.ok(PROCESS_TYPES.includes(String(parsed.ProcessType)), String(parsed.ProcessType));
    }
    if (typeOf(parsed.KeepAlive) === "dict") {
      for (const k of Object.keys(parsed.KeepAlive as object)) {
        assert.ok(KEEPALIVE_KEYS.includes(k), `KeepAlive.${k} is not documented`);
      }
    }
    for (const limits of ["SoftResourceLimits", "HardResourceLimits"]) {
      for (const [k, v] of Object.entries((parsed[limits] ?? {}) as Record<string, unknown>)) {
        assert.ok(RESOURCE_LIMIT_KEYS.includes(k), `${limits}.${k} is not documented`);
        assert.equal(typeOf(v), "integer", `${limits}.${k}`);
      }
    }
    // setrlimit(2) on macOS refuses more open files than OPEN_MAX (10,240).
    const files = (parsed.SoftResourceLimits as { NumberOfFiles?: number } | undefined)
      ?.NumberOfFiles;
    if (files !== undefined) assert.ok(files > 256 && files <= 10_240, String(files));
    const env = (parsed.EnvironmentVariables ?? {}) as Record<string, unknown>;
    for (const [k, v] of Object.entries(env)) assert.equal(typeof v, "string", k);
    // A per-user agent runs as its user: UserName applies only to the system domain.
    if (entry.name.includes("agent")) assert.ok(!("UserName" in parsed), "UserName in an agent");
    // The collector needs a shutdown window longer than its own 10 s flush.
    assert.ok(Number(parsed.ExitTimeOut ?? 20) > 10, "ExitTimeOut must exceed the 10 s flush");
  }
});

Deno.test("install refuses an env file that is a directory (an empty --env-file= names the working directory)", async () => {
  await using tmp = await tempDir();
  const program = `${tmp.path}/l2-uploader`;
  await Deno.writeTextFile(program, "");
  const f = fakes({ dryRun: true, programPath: program, envFile: tmp.path, fileExists: undefined });
  assert.equal(await install(f.options), 1, "a dry run with a problem exits as the install would");
  assert.match(f.output(), new RegExp(`the env file ${tmp.path} is not a file`));
  assert.doesNotMatch(f.output(), /the program .* is not a file/);
});

Deno.test("install checks the env file's values as the job will read them, and its paths for macOS privacy", async () => {
  await using tmp = await tempDir();
  const program = `${tmp.path}/l2-uploader`;
  await Deno.writeTextFile(program, "");
  const envFile = `${tmp.path}/l2.env`;
  const run = (text: string) => {
    const f = fakes({
      dryRun: true,
      programPath: program,
      envFile,
      fileExists: undefined,
      readTextFile: () => Promise.resolve(text),
    });
    return install(f.options).then((code) => ({ code, out: f.output() }));
  };
  await Deno.writeTextFile(envFile, "");
  const bad = await run("SYMBOL=BTCUSDT\nBATCH_SECONDS=zero\nDEPTH_LEVEL=7\n");
  assert.equal(bad.code, 1, bad.out);
  assert.match(bad.out, /# problem: the env file .*l2\.env has values the job would stop on/);
  assert.match(bad.out, /BATCH_SECONDS/);
  assert.match(bad.out, /DEPTH_LEVEL/);
  const good = await run("SYMBOL=BTCUSDT\nDATA_DIR=/Users/alice/Documents/l2\n");
  assert.equal(good.code, 0, good.out);
  assert.match(good.out, /# warning: \/Users\/alice\/Documents\/l2 is in a folder macOS guards/);
});
