package plugin

import "testing"

// testClock replaces the plugin's clock in Go-runner tests, so expiry and deadlines are tested
// by moving time, never by sleeping.
type testClock struct{ ms int64 }

func fakeClock(t *testing.T) *testClock {
	c := &testClock{ms: 1_800_000_000_000}
	prev := nowMs
	nowMs = func() int64 { return c.ms }
	t.Cleanup(func() { nowMs = prev })
	return c
}

func (c *testClock) advance(ms int64) { c.ms += ms }
