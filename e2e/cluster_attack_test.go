package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// TestClusterMigrationKeepsTheLoneJournal: growing a lone gateway into a
// cluster, with real processes. The lone gateway's journal, converted at
// its first start with peers, holds records no Raft log entry carries:
// started with other peers in its list it is refused (naming the way to
// do it), started alone it bootstraps the cluster from its journal, and a
// node added to it receives the lone gateway's records. (Before the fix,
// every node of a new cluster bootstrapped the same first log entry: a
// node added, or elected, had none of the lone gateway's records.)
func TestClusterMigrationKeepsTheLoneJournal(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{Users: 3})
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	for i := range 3 {
		uid := slapd.UserUID(i)
		pw := fmt.Sprintf("lone-pw-%d", i)
		if _, err := admin.PasswordModify(ldap.NewPasswordModifyRequest(userDN(uid), "", pw)); err != nil {
			t.Fatal(err)
		}
		e.setKnownPassword(e.accountName(uid), pw)
	}
	admin.Close()
	e.waitDrained(30*time.Second, false)
	e.stop()
	lone := len(e.journalRecords())
	if lone < 3 {
		t.Fatalf("the lone gateway journaled %d records", lone)
	}

	ports := freeLoopbackPorts(t, 2)
	addrA, addrB := fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])
	base := slices.Clone(e.args)

	// With the other node in its list: refused, before serving.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, gatewayBin, append(slices.Clone(base), "--node-id", "a", "--cluster-listen", addrA,
		"--cluster-peer", "a@"+addrA, "--cluster-peer", "b@"+addrB)...)
	cmd.Env = withoutLDAPGateEnv(os.Environ())
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "alone in its --cluster-peer list") {
		t.Fatalf("a converted journal started with another peer: %v\n%s", err, tail(string(out), 3000))
	}

	// Alone: it bootstraps from its journal and serves.
	e.args = append(slices.Clone(base), "--node-id", "a", "--cluster-listen", addrA, "--cluster-peer", "a@"+addrA)
	e.start()

	// b joins with an empty data folder and the key.
	root := t.TempDir()
	dataB := filepath.Join(root, "data")
	if err := os.MkdirAll(dataB, 0o700); err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(e.dataDir, "journal.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataB, "journal.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	argsB := slices.Clone(base)
	argsB[slices.Index(argsB, "--data-dir")+1] = dataB
	argsB[slices.Index(argsB, "--addr-file")+1] = filepath.Join(root, "addr")
	argsB = append(argsB, "--node-id", "b", "--cluster-listen", addrB, "--cluster-peer", "a@"+addrA)
	b := exec.Command(gatewayBin, argsB...)
	b.Env = withoutLDAPGateEnv(os.Environ())
	logB, err := os.Create(filepath.Join(root, "gateway.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logB.Close()
	b.Stdout, b.Stderr = logB, logB
	b.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { b.Wait(); close(exited) }()
	defer func() {
		b.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			b.Process.Kill()
			<-exited
			t.Error("b did not stop within 20s of SIGTERM")
		}
		if t.Failed() {
			data, _ := os.ReadFile(filepath.Join(root, "gateway.log"))
			t.Logf("b's log (tail):\n%s", tail(string(data), 6000))
		}
	}()
	waitFor(t, 30*time.Second, "b's admin socket", func() error {
		_, err := os.Stat(filepath.Join(dataB, "admin.sock"))
		return err
	})
	// Once a has elected itself.
	waitFor(t, 30*time.Second, "cluster add b", func() error {
		if out, err := exec.CommandContext(ctx, gatewayBin, "cluster", "add", "--data-dir", e.dataDir, "b@"+addrB).CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	// b holds the lone gateway's records.
	waitFor(t, 30*time.Second, "b to hold the lone gateway's records", func() error {
		out, err := exec.CommandContext(ctx, gatewayBin, "journal", "ls", "--json", "--limit", "0", "--data-dir", dataB).CombinedOutput()
		if err != nil {
			return fmt.Errorf("journal ls on b: %v: %s", err, out)
		}
		recs, err := decodeRecords(string(out))
		if err != nil {
			return err
		}
		if len(recs) != lone {
			return fmt.Errorf("b holds %d records, the lone gateway journaled %d", len(recs), lone)
		}
		return nil
	})
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
