package liveset

import (
	"cmp"
	"slices"
	"sync"
	"testing"
)

func TestSetListsWhatIsOpen(t *testing.T) {
	var s Set[int]
	ids := func() []int { return Each(&s, func(v *int) int { return *v }, cmp.Compare[int]) }
	a, closeA := s.Add(1)
	_, closeB := s.Add(2)
	a.Update(func(v *int) { *v = 3 })
	if got := ids(); !slices.Equal(got, []int{2, 3}) {
		t.Fatalf("open records %v, want [2 3]", got)
	}
	closeA()
	closeB()
	if got := ids(); len(got) != 0 {
		t.Fatalf("after closing both: %v", got)
	}
}

// TestUpdatesAndReadsRace: owners updating while a reader lists them is
// what -race checks here.
func TestUpdatesAndReadsRace(t *testing.T) {
	var s Set[[2]int]
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			r, done := s.Add([2]int{i, 0})
			defer done()
			for range 100 {
				r.Update(func(v *[2]int) { v[1]++ })
			}
		})
	}
	for range 50 {
		for _, v := range Each(&s, func(v *[2]int) [2]int { return *v }, func(a, b [2]int) int { return cmp.Compare(a[0], b[0]) }) {
			if v[1] < 0 || v[1] > 100 {
				t.Fatalf("record %v", v)
			}
		}
	}
	wg.Wait()
}
