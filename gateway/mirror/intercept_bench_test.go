package mirror

import (
	"context"
	"fmt"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// BenchmarkInterceptModify measures the gateway's own work on one
// mirrored modify (issue 19): Intercept as the service identity, which
// the bench's clients write as (identify, classify, decide, prepare with
// its journal record, the image's post-read control), and the Completion
// with the directory's answer (settle, the image kept). The directory's
// answer is one slapd gave to such a write, captured once, so the numbers
// are the gateway's alone; the journal does not sync.
func BenchmarkInterceptModify(b *testing.B) {
	const users = 256
	rig := newPipelineRigWith(b, slapd.Options{Users: users})
	m, _, _ := rig.mirror(b)
	ctx := context.Background()
	dn := func(i int) string { return "uid=" + slapd.UserUID(i%users) + ",ou=people," + pipeSuffix }

	// Each user's write relayed to slapd once for real, for its answer.
	answers := make([]gateway.Result, users)
	for i := range users {
		req := replace(dn(i), "displayName", "warm")
		done, answer := intercept(ctx, m, pipeAdminDN, req)
		if answer != nil || done == nil {
			b.Fatalf("the write is not relayed: %+v", answer)
		}
		answers[i] = relayAsDirectory(b, rig.dir, req)
		done(ctx, answers[i])
		if postReadEntry(answers[i].Controls) == nil {
			b.Fatal("slapd's answer has no post-read entry")
		}
	}

	// With an audit log, and without one (the bench's gateways).
	audit := m.cfg.Audit
	for _, withAudit := range []bool{true, false} {
		b.Run(fmt.Sprintf("audit=%v", withAudit), func(b *testing.B) {
			m.cfg.Audit = audit
			if !withAudit {
				m.cfg.Audit = slog.New(slog.DiscardHandler)
			}
			b.ReportAllocs()
			cpu := processCPU()
			i := 0
			for b.Loop() {
				i++
				req := replace(dn(i), "displayName", fmt.Sprint("v", i))
				done, answer := intercept(ctx, m, pipeAdminDN, req)
				if answer != nil || done == nil {
					b.Fatalf("write %d is not relayed: %+v", i, answer)
				}
				done(ctx, answers[i%users])
			}
			m.settling.Wait() // the settles in the background are the write's work too
			// Wall time is mostly the journal's waits; the CPU time is the work.
			b.ReportMetric(float64((processCPU()-cpu).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

// processCPU is the CPU time the process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
