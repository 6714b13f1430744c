package axigen

import (
	"context"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/integration/axigensim"
)

const (
	testDomain   = "example.com"
	testAdmin    = "admin"
	testPassword = "adm1n-pw"
)

// env is a simulator with one domain, and a client on a pool of its own.
type env struct {
	sim    *axigensim.Server
	cfg    Config
	pool   *Pool
	client *Client
}

func newEnv(t testing.TB, sessions int, opts ...Option) *env {
	t.Helper()
	sim := axigensim.New(axigensim.Options{
		Admins:  map[string]string{testAdmin: testPassword},
		Domains: []string{testDomain},
	})
	if err := sim.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	cfg := Config{
		Addr:           sim.Addr(),
		User:           testAdmin,
		Password:       testPassword,
		DialTimeout:    5 * time.Second,
		CommandTimeout: 5 * time.Second,
	}
	pool := NewPool(cfg, sessions)
	t.Cleanup(func() { pool.Close() })
	return &env{sim: sim, cfg: cfg, pool: pool, client: NewClient(pool, opts...)}
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// commandsSince returns the commands every session sent from the given
// per-session offsets on (see commandCounts), logins left out.
func (e *env) commandsSince(before map[int]int) []string {
	var out []string
	for _, tr := range e.sim.Transcripts() {
		cmds := tr.Commands()
		from, seen := before[tr.ID]
		if !seen {
			from = min(2, len(cmds)) // a new session: skip USER and the password line
		}
		out = append(out, cmds[from:]...)
	}
	return out
}

// commandCounts records how many commands each session has sent so far.
func (e *env) commandCounts() map[int]int {
	m := map[int]int{}
	for _, tr := range e.sim.Transcripts() {
		m[tr.ID] = len(tr.Commands())
	}
	return m
}
