package samba

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// provisioned returns the path of a tarball holding a freshly provisioned
// domain for opts, provisioning it first when the cache has none. The
// cache is keyed by Samba's version and the domain's names and password,
// so an upgrade or other options never reuse a stale domain. A lock on
// the cache folder makes concurrent callers (parallel test binaries)
// provision once.
func provisioned(ctx context.Context, opts Options) (string, error) {
	version, err := exec.CommandContext(ctx, SambaPath, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("samba: %s --version: %w", SambaPath, err)
	}
	sum := sha256.Sum256([]byte(strings.Join([]string{
		strings.TrimSpace(string(version)), opts.Realm, opts.Domain, hostName, opts.AdminPassword, "v1",
	}, "\x00")))
	if err := os.MkdirAll(opts.CacheDir, 0o700); err != nil {
		return "", fmt.Errorf("samba: cache folder: %w", err)
	}
	tarball := filepath.Join(opts.CacheDir, "domain-"+hex.EncodeToString(sum[:8])+".tar")
	if _, err := os.Stat(tarball); err == nil {
		return tarball, nil
	}
	lock, err := flockPath(ctx, filepath.Join(opts.CacheDir, ".lock"), 5*time.Minute)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if _, err := os.Stat(tarball); err == nil {
		return tarball, nil // another process provisioned while we waited
	}
	work, err := os.MkdirTemp(opts.CacheDir, "provision-")
	if err != nil {
		return "", fmt.Errorf("samba: %w", err)
	}
	defer os.RemoveAll(work)
	target := filepath.Join(work, "dc")
	run := func(name string, args ...string) error {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = work
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("samba: %s %s: %w: %s", filepath.Base(name), args[0], err, lastLines(out, 20))
		}
		return nil
	}
	// -s /dev/null: nothing is inherited from /etc/samba/smb.conf.
	if err := run(SambaToolPath, "domain", "provision", "-s", "/dev/null",
		"--targetdir="+target, "--realm="+opts.Realm, "--domain="+opts.Domain,
		"--host-name="+hostName, "--adminpass="+opts.AdminPassword,
		"--server-role=dc", "--dns-backend=NONE", "--use-rfc2307"); err != nil {
		return "", err
	}
	// Complexity and length rules stay as in AD; the minimum age and the
	// history are lifted so that tests may change a password twice in a row.
	if err := run(SambaToolPath, "domain", "passwordsettings", "set",
		"-s", filepath.Join(target, "etc", "smb.conf"),
		"-H", filepath.Join(target, "private", "sam.ldb"),
		"--min-pwd-age=0", "--history-length=0"); err != nil {
		return "", err
	}
	tmp := filepath.Join(work, "domain.tar")
	if err := run("tar", "-C", target, "-cf", tmp, "."); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, tarball); err != nil {
		return "", fmt.Errorf("samba: keep the provisioned domain: %w", err)
	}
	return tarball, nil
}

func lastLines(out []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ensureLoopback adds addr to lo when no interface holds it yet: Samba
// binds only to addresses an interface carries.
func ensureLoopback(ctx context.Context, addr string) error {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return fmt.Errorf("samba: list addresses: %w", err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.String() == addr {
			return nil
		}
	}
	out, err := exec.CommandContext(ctx, "ip", "addr", "add", addr+"/32", "dev", "lo").CombinedOutput()
	if err != nil && !bytes.Contains(out, []byte("File exists")) {
		return fmt.Errorf("samba: add %s to lo (needs root; or run `ip addr add %s/32 dev lo` once): %w: %s",
			addr, addr, err, bytes.TrimSpace(out))
	}
	return nil
}

// lockAddr takes the machine-wide lock of a loopback address, waiting for
// another instance on it to stop.
func lockAddr(ctx context.Context, addr string) (*os.File, error) {
	return flockPath(ctx, filepath.Join(os.TempDir(), "ldapgate-samba-"+addr+".lock"), 10*time.Minute)
}

// flockPath opens path and takes an exclusive lock on it, polling until
// it is free, ctx ends or wait passes. Closing the file releases it.
func flockPath(ctx context.Context, path string, wait time.Duration) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("samba: lock file: %w", err)
	}
	deadline := time.Now().Add(wait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("samba: lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("samba: %s is still locked after %v: another instance holds it", path, wait)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
