/**
 * A `fetch` standing in for Binance REST in unit tests of `check`: the ping
 * answers `{}`, `exchangeInfo` lists the given symbols as TRADING (BINANCE.md,
 * exchangeInfo). Loopback-free: nothing leaves the process.
 */
export function fakeBinanceRest(symbols: readonly string[] = ["BTCUSDT"]): typeof fetch {
  const info = JSON.stringify({
    symbols: symbols.map((symbol) => ({ symbol, status: "TRADING" })),
  });
  return (input) =>
    Promise.resolve(new Response(String(input).includes("/exchangeInfo") ? info : "{}"));
}
