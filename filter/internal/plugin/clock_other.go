//go:build !wasip1

package plugin

import "time"

// processStart anchors the monotonic clock of Go-mode tests (one process, like one Envoy).
var processStart = time.Now()

func monotonicMs() int64 { return time.Since(processStart).Milliseconds() + 1 }
