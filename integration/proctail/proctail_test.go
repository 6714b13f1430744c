package proctail

import (
	"testing"
)

func TestBufferKeepsTheTail(t *testing.T) {
	b := New(10, "test", nil)
	for _, s := range []string{"first line\n", "second\n", "third\n"} {
		if _, err := b.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if got := b.String(); got != "ond\nthird\n" {
		t.Fatalf("kept %q, want the last 10 bytes", got)
	}
	c := make(chan struct{})
	if Closed(c) {
		t.Fatal("open channel reported closed")
	}
	close(c)
	if !Closed(c) || !Closed(nil) {
		t.Fatal("closed or nil channel reported open")
	}
}
