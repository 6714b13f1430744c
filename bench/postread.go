package main

// The post-read suite (issue 19): what RFC 4527's post-read control, which
// the gateway adds to the service identity's account modifies (the
// entry's image: gateway/mirror/images.go), costs slapd by itself. The
// same -clients clients replace displayName on random users straight to
// slapd, without the control, with the image's attributes (the mapping's
// account attributes and entryCSN, as the gateway asks for them), and with
// just the name, key and entryCSN, in interleaved rounds. No gateway runs.

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/ldapwire"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
	"github.com/ldapgate/ldapgate/schema"
)

// postReadVariant is one way the clients' modifies go: with the post-read
// control asking for attrs, or without it (attrs nil).
type postReadVariant struct {
	name  string
	attrs []string
}

// runPostRead measures the post-read suite against dir and prints its
// table.
func runPostRead(ctx context.Context, o options, log *slog.Logger, dir *slapd.Server, out io.Writer) error {
	mp, err := schema.NewMapping(schema.Config{Dialect: schema.OpenLDAP,
		AccountBase: schema.DNList{benchAccountBase}, GroupBase: schema.DNList{benchGroupBase}})
	if err != nil {
		return err
	}
	variants := []postReadVariant{
		{"none", nil},
		{"image", append(mp.AccountAttributes(), "entryCSN")}, // as gateway/mirror's attrLists
		{"name-key-csn", []string{mp.NameAttribute(), mp.KeyAttribute(), "entryCSN"}},
	}
	type result struct {
		writes int64
		slapd  slapdCounters
		rates  []float64
	}
	res := map[string]*result{}
	for r := range o.rounds {
		for k := range variants {
			v := variants[(k+r)%len(variants)]
			before := readSlapdCounters(dir.PID())
			n, elapsed, err := postReadRound(ctx, o, dir, v.attrs)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", r+1, v.name, err)
			}
			after := readSlapdCounters(dir.PID())
			x := res[v.name]
			if x == nil {
				x = &result{}
				res[v.name] = x
			}
			x.writes += n
			x.slapd = x.slapd.plus(after, before)
			x.rates = append(x.rates, float64(n)/elapsed.Seconds())
			log.Info("measured", "round", r+1, "variant", v.name, "writes", n)
		}
	}
	fmt.Fprintf(out, "\npost-read control: %d clients replacing %s on random users of %d straight to slapd, %d round(s) of %v per variant\n",
		o.clients, benchAttr, o.users, o.rounds, o.duration)
	fmt.Fprintf(out, "  image: %v\n\n%-26s", variants[1].attrs, "per write")
	for _, v := range variants {
		fmt.Fprintf(out, " %14s", v.name)
	}
	fmt.Fprintln(out)
	row := func(label string, f func(x *result) string) {
		fmt.Fprintf(out, "%-26s", label)
		for _, v := range variants {
			fmt.Fprintf(out, " %14s", f(res[v.name]))
		}
		fmt.Fprintln(out)
	}
	per := func(d time.Duration, x *result) string {
		return fmt.Sprintf("%.0f", float64(d.Microseconds())/float64(x.writes))
	}
	row("writes/s (median)", func(x *result) string { return fmt.Sprintf("%.0f", median(x.rates)) })
	row("slapd CPU µs", func(x *result) string { return per(x.slapd.user+x.slapd.sys, x) })
	row("slapd user CPU µs", func(x *result) string { return per(x.slapd.user, x) })
	row("slapd system CPU µs", func(x *result) string { return per(x.slapd.sys, x) })
	row("slapd read syscalls", func(x *result) string { return fmt.Sprintf("%.2f", float64(x.slapd.syscr)/float64(x.writes)) })
	row("slapd write syscalls", func(x *result) string { return fmt.Sprintf("%.2f", float64(x.slapd.syscw)/float64(x.writes)) })
	row("slapd ctx switches", func(x *result) string {
		return fmt.Sprintf("%.2f", float64(x.slapd.voluntary+x.slapd.invol)/float64(x.writes))
	})
	none := res["none"]
	cpu := func(x *result) float64 {
		return float64((x.slapd.user + x.slapd.sys).Microseconds()) / float64(x.writes)
	}
	fmt.Fprintln(out)
	for _, v := range variants[1:] {
		fmt.Fprintf(out, "%-58s %6.2f\n", "slapd CPU per write with the "+v.name+" post-read / without", cpu(res[v.name])/cpu(none))
	}
	return nil
}

// postReadRound runs the clients for o.duration, each on its own
// connection bound as slapd's root (the gateway's service identity in the
// mirror suite), and returns the writes made.
func postReadRound(ctx context.Context, o options, dir *slapd.Server, attrs []string) (int64, time.Duration, error) {
	var control []ldap.Control
	if attrs != nil {
		var sel []byte
		for _, a := range attrs {
			sel = ldapwire.AppendTLV(sel, ldapwire.TagOctetString, []byte(a))
		}
		value := ldapwire.AppendTLV(nil, ldapwire.TagSequence, sel)
		control = []ldap.Control{ldap.NewControlString("1.3.6.1.1.13.2", false, string(value))}
	}
	conns := make([]*ldap.Conn, 0, o.clients)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range o.clients {
		c, err := dir.AdminConn(ctx)
		if err != nil {
			return 0, 0, err
		}
		conns = append(conns, c)
	}
	var (
		n        atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	start := time.Now()
	end := start.Add(o.duration)
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) && ctx.Err() == nil {
				req := ldap.NewModifyRequest("uid="+slapd.UserUID(rand.IntN(o.users))+","+benchAccountBase, slices.Clone(control))
				req.Replace(benchAttr, []string{fmt.Sprint("p", rand.Int64())})
				r, err := c.ModifyWithResult(req)
				if err == nil && attrs != nil && len(r.Controls) == 0 {
					err = fmt.Errorf("slapd answered a post-read with no control")
				}
				if err != nil {
					mu.Lock()
					firstErr = cmp.Or(firstErr, err)
					mu.Unlock()
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return n.Load(), time.Since(start), firstErr
}
