//go:build netpollprobe

package main

import "time"

// Built only with -tags netpollprobe, for the legacy-Envoy GC-pressure test (e2e/legacy_test.go).
//
// The filter itself starts no timer and opens no pollable file, so its Go runtime never
// initialises netpoll, and the poll_oneoff that kills Go modules on Envoys before
// proxy-wasm-cpp-host 94091cd is not reached. Any dependency that arms a timer (time.AfterFunc,
// context.WithTimeout, a retry helper) changes that: from then on every stop-the-world of every
// garbage collection ends in netpoll(0), a poll_oneoff with only a clock subscription
// (golang/go#78513). This file is that dependency, so the test can show what the runtime patch
// (internal/compat) protects against before the day a real dependency brings it in.
var probeTimer = time.AfterFunc(24*time.Hour, func() {})
