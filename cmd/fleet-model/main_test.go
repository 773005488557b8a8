package main

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

// The issue's own example: 20 replicas, 200,000 active users, 5-minute tokens, every user
// reaching every replica: about 13,000 exchanges per second with round robin, 667 with hashing.
func TestModelMatchesTheFleetExample(t *testing.T) {
	r := model(20, 200_000, 300, 1000, 854, 1024)
	if math.Abs(r.rrPerSecond-13_333) > 1 || math.Abs(r.hashPerSecond-666.7) > 1 {
		t.Errorf("round robin %.0f/s, hash %.0f/s; want 13,333 and 667", r.rrPerSecond, r.hashPerSecond)
	}
	if r.hashPerProxy != 10_000 || r.slotsNeeded != 3334 {
		t.Errorf("hash: %.0f users per proxy, %d slots", r.hashPerProxy, r.slotsNeeded)
	}
}

// Measured in make bench: 8 proxies, 12 requests per user, strict round robin → 8.00 exchanges
// per user (each user walks every proxy). The model assumes a user's requests land on proxies
// at random among everyone else's (6.39 for that case): lower, never above R.
func TestModelAgreesWithTheMeasurement(t *testing.T) {
	r := model(8, 101, 300, 12, 854, 1024)
	perUser := r.rrPerSecond * 300 / 101
	if perUser > 8 || perUser < 6 {
		t.Errorf("%.2f exchanges per user with round robin, measured 8.00", perUser)
	}
	if h := r.hashPerSecond * 300 / 101; math.Abs(h-1) > 1e-9 {
		t.Errorf("%.2f exchanges per user with hashing, measured 1.00", h)
	}
}

func TestTable(t *testing.T) {
	var b bytes.Buffer
	print(&b, []row{model(4, 10_000, 300, 20, 854, 1024)}, 300, 20, 1024)
	if !strings.Contains(b.String(), "| 4 | 10,000 | 133 | 33 |") {
		t.Errorf("table:\n%s", b.String())
	}
}
