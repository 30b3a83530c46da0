/**
 * Whether the ops endpoint (METRICS_ADDR) is reachable from other machines.
 * It has no authentication: listening beyond loopback deserves a warning.
 */

/** True for addresses only this machine can reach: 127.0.0.0/8, ::1, localhost. */
export function isLoopback(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, "").toLowerCase();
  if (host === "localhost" || host === "::1" || host === "0:0:0:0:0:0:0:1") return true;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** The warning for METRICS_ADDR, or undefined when it is loopback only. */
export function exposureWarning(addr: { hostname: string; port: number }): string | undefined {
  if (isLoopback(addr.hostname)) return undefined;
  return `METRICS_ADDR ${addr.hostname}:${addr.port} is not a loopback address: ` +
    `/metrics and /status are served to the network with no authentication`;
}
