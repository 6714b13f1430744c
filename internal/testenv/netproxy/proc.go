package netproxy

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// socketOwner finds which of pids holds the TCP socket whose local end is
// local and remote end is remote: the dialling side of a connection the
// caller accepted (local there is the caller's remote). It returns 0 when
// none of them does.
func socketOwner(local, remote *net.TCPAddr, pids []int) (int, error) {
	inode, err := socketInode(local, remote)
	if err != nil {
		return 0, err
	}
	want := fmt.Sprintf("socket:[%s]", inode)
	for _, pid := range pids {
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			continue // gone, or not ours to read
		}
		for _, fd := range fds {
			target, err := os.Readlink(filepath.Join(fmt.Sprintf("/proc/%d/fd", pid), fd.Name()))
			if err == nil && target == want {
				return pid, nil
			}
		}
	}
	return 0, nil
}

// socketInode reads the inode of the socket local→remote from
// /proc/net/tcp and tcp6.
func socketInode(local, remote *net.TCPAddr) (string, error) {
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		inode, err := findInode(table, local, remote)
		if err != nil {
			return "", err
		}
		if inode != "" {
			return inode, nil
		}
	}
	return "", errors.New("netproxy: socket not found in /proc/net/tcp*")
}

func findInode(table string, local, remote *net.TCPAddr) (string, error) {
	f, err := os.Open(table)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 {
			continue
		}
		l, err1 := parseProcAddr(fields[1])
		r, err2 := parseProcAddr(fields[2])
		if err1 != nil || err2 != nil {
			continue
		}
		if sameAddr(l, local) && sameAddr(r, remote) {
			return fields[9], nil
		}
	}
	return "", sc.Err()
}

// parseProcAddr reads "0100007F:1F90": the address as the kernel holds it
// in 32-bit words of host byte order (little-endian here), the port in
// hexadecimal.
func parseProcAddr(s string) (*net.TCPAddr, error) {
	hexIP, hexPort, ok := strings.Cut(s, ":")
	if !ok {
		return nil, fmt.Errorf("bad address %q", s)
	}
	raw, err := hex.DecodeString(hexIP)
	if err != nil || len(raw)%4 != 0 {
		return nil, fmt.Errorf("bad address %q", s)
	}
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		return nil, fmt.Errorf("bad port in %q", s)
	}
	return &net.TCPAddr{IP: net.IP(raw), Port: int(port)}, nil
}

func sameAddr(a, b *net.TCPAddr) bool {
	return a.Port == b.Port && a.IP.Equal(b.IP)
}
