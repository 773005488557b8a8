package flight

import (
	"slices"
	"testing"
)

func TestFirstHolderStartsTheFlightOthersJoin(t *testing.T) {
	r := New(10, 10)
	f, started, err := r.Hold(1, "k", 100, 200)
	if err != nil || !started || f.Key != "k" || f.DeadlineMs != 200 {
		t.Fatalf("first hold: %+v started=%v err=%v", f, started, err)
	}
	g, started, err := r.Hold(2, "k", 150, 999)
	if err != nil || started || g != f {
		t.Fatalf("second hold must join the same flight: started=%v same=%v err=%v", started, g == f, err)
	}
	if f.DeadlineMs != 200 {
		t.Fatalf("joining changed the flight deadline to %d", f.DeadlineMs)
	}
	if got := r.Finish(f, nil); !slices.Equal(got, []uint32{1, 2}) {
		t.Fatalf("Finish woke %v, want [1 2] in arrival order", got)
	}
	if r.Held() != 0 || r.Flights() != 0 {
		t.Fatalf("state left after Finish: held=%d flights=%d", r.Held(), r.Flights())
	}
}

func TestDroppedWaiterIsNotWokenButFlightGoesOn(t *testing.T) {
	r := New(10, 10)
	f, _, _ := r.Hold(1, "k", 100, 200)
	r.Hold(2, "k", 100, 200)
	r.Hold(3, "k", 100, 200)
	r.Drop(1) // the initiator's client went away
	if _, ok := r.Get("k"); !ok {
		t.Fatalf("flight ended with its initiator")
	}
	if got := r.Finish(f, nil); !slices.Equal(got, []uint32{2, 3}) {
		t.Fatalf("Finish woke %v, want [2 3]", got)
	}
}

func TestHoldMovesARequestToAnotherKey(t *testing.T) {
	r := New(10, 10)
	ex, _, _ := r.Hold(1, "exchange", 100, 200)
	sa, started, _ := r.Hold(1, "sa", 100, 200)
	if !started {
		t.Fatalf("service flight not started")
	}
	if key, _ := r.IsHeld(1); key != "sa" {
		t.Fatalf("held on %q, want sa", key)
	}
	if got := r.Finish(ex, nil); len(got) != 0 {
		t.Fatalf("old flight woke %v", got)
	}
	if got := r.Finish(sa, nil); !slices.Equal(got, []uint32{1}) {
		t.Fatalf("new flight woke %v", got)
	}
}

func TestBoundsRefuseInsteadOfGrowing(t *testing.T) {
	r := New(2, 1)
	if _, _, err := r.Hold(1, "a", 1, 1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Hold(2, "b", 1, 1); err != ErrFull {
		t.Fatalf("second flight over maxFlights: err=%v", err)
	}
	if _, _, err := r.Hold(2, "a", 1, 1); err != nil {
		t.Fatalf("joining an existing flight within maxHeld: %v", err)
	}
	if _, _, err := r.Hold(3, "a", 1, 1); err != ErrFull {
		t.Fatalf("third request over maxHeld: err=%v", err)
	}
	if r.Start("b", 1) != nil {
		t.Fatalf("Start over maxFlights")
	}
}

func TestExpiredReleasesLateRequestsAndAbandonsSilentFlights(t *testing.T) {
	r := New(10, 10)
	f, _, _ := r.Hold(1, "k", 100, 500)
	r.Hold(2, "k", 300, 500)
	if got, gone := r.Expired(99, nil, nil); len(got) != 0 || len(gone) != 0 {
		t.Fatalf("expired too early: %v %v", got, gone)
	}
	if got, gone := r.Expired(100, nil, nil); !slices.Equal(got, []uint32{1}) || len(gone) != 0 {
		t.Fatalf("at 100: %v %v, want [1] and no flight", got, gone)
	}
	if _, ok := r.Get("k"); !ok {
		t.Fatalf("flight abandoned before its own deadline")
	}
	if got, gone := r.Expired(500, nil, nil); !slices.Equal(got, []uint32{2}) || len(gone) != 1 || gone[0] != f {
		t.Fatalf("at 500: %v %v, want [2] and the flight", got, gone)
	}
	if _, ok := r.Get("k"); ok {
		t.Fatalf("silent flight not abandoned at its deadline")
	}
	// A late answer to the abandoned flight finds nobody to wake and leaves a new flight alone.
	g, started, _ := r.Hold(3, "k", 900, 900)
	if !started || g == f {
		t.Fatalf("new flight for the key not started")
	}
	if got := r.Finish(f, nil); len(got) != 0 {
		t.Fatalf("late Finish of the abandoned flight woke %v", got)
	}
	if cur, _ := r.Get("k"); cur != g {
		t.Fatalf("late Finish removed the new flight")
	}
}

func TestBackgroundFlightAndUndispatched(t *testing.T) {
	r := New(10, 10)
	f := r.Start("sa", 100)
	if f == nil || r.Start("sa", 100) != nil {
		t.Fatalf("Start must create once")
	}
	if got := r.Undispatched(nil); len(got) != 1 || got[0] != f {
		t.Fatalf("undispatched = %v", got)
	}
	f.Dispatched = true
	if got := r.Undispatched(nil); len(got) != 0 {
		t.Fatalf("dispatched flight listed as undispatched")
	}
}

func BenchmarkHoldFinish(b *testing.B) {
	r := New(4096, 1024)
	var dst []uint32
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		f, _, _ := r.Hold(1, "key", 1, 1)
		r.Hold(2, "key", 1, 1)
		dst = r.Finish(f, dst[:0])
	}
}
