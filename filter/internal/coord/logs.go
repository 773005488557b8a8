package coord

import "strconv"

// LogPrefix starts every line the filter writes, so operators can grep Envoy's log for it.
const LogPrefix = "token-exchange: "

// warnWindowMs is how often one kind of warning may be written per VM. A failing IdP under load
// would otherwise write one line per request.
const warnWindowMs = 10_000

// warnLimiter writes at most one warning per kind per window and says how many it held back.
// Kinds are a small fixed set of constant strings, so the maps stay bounded.
type warnLimiter struct {
	lastMs     map[string]int64
	suppressed map[string]int
}

func newWarnLimiter() warnLimiter {
	return warnLimiter{lastMs: map[string]int64{}, suppressed: map[string]int{}}
}

// warn logs msg under kind unless a line of that kind was written less than a window ago.
// msg must never contain a token or secret: callers pass fingerprints and sanitised IdP text.
func (l *warnLimiter) warn(w *Worker, kind string, nowMs int64, msg string) {
	if last, ok := l.lastMs[kind]; ok && nowMs-last < warnWindowMs && nowMs >= last {
		l.suppressed[kind]++
		return
	}
	if n := l.suppressed[kind]; n > 0 {
		msg += " (" + strconv.Itoa(n) + " similar warnings suppressed)"
	}
	l.lastMs[kind] = nowMs
	l.suppressed[kind] = 0
	w.host.Log(Warn, LogPrefix+msg)
}
