package store

import (
	"context"
	"fmt"
	"testing"
)

// TestRangeAndBounds proves that Range walks the journal from a sequence
// number in pages bounded by count and by size, skipping aborted records,
// and that Bounds names the oldest and newest record.
func TestRangeAndBounds(t *testing.T) {
	j, _ := newTestJournal(t)
	if first, last, err := j.Bounds(); err != nil || first != 0 || last != 0 {
		t.Fatalf("bounds of an empty journal: %d %d %v", first, last, err)
	}
	var kept []uint64
	for i := range 10 {
		r := accountRecord(fmt.Sprintf("uid=u%d,ou=people,dc=example,dc=com", i))
		if i == 0 || i == 4 {
			seq, err := j.Prepare(context.Background(), r)
			if err != nil {
				t.Fatal(err)
			}
			if err := j.Abort(context.Background(), seq); err != nil {
				t.Fatal(err)
			}
			continue
		}
		kept = append(kept, mustPrepareCommit(t, j, r, ""))
	}
	first, last, err := j.Bounds()
	if err != nil || first != kept[0] || last != kept[len(kept)-1] {
		t.Fatalf("bounds %d..%d (%v), want %d..%d", first, last, err, kept[0], kept[len(kept)-1])
	}
	var walked []uint64
	for from := uint64(0); ; {
		page, err := j.Range(from, 3, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > 3 {
			t.Fatalf("page of %d records, limit 3", len(page))
		}
		if len(page) == 0 {
			break
		}
		for _, r := range page {
			walked = append(walked, r.Seq)
		}
		from = page[len(page)-1].Seq + 1
	}
	if fmt.Sprint(walked) != fmt.Sprint(kept) {
		t.Fatalf("walked %v, want %v", walked, kept)
	}
	// A byte bound of 1 still returns one record per page.
	if page, err := j.Range(kept[2], 0, 1); err != nil || len(page) != 1 || page[0].Seq != kept[2] {
		t.Fatalf("byte-bounded page: %v %v", page, err)
	}
}
