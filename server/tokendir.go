package server

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// ErrUnsafePath: a directory or file the daemon keeps tokens in could be
// written, or was planted, by a user other than the daemon's own (or
// root). Every refusal of TokenDir and LoadClientToken for that reason
// wraps it.
var ErrUnsafePath = errors.New("unsafe token file or directory")

// TokenDir is a directory checked as safe to keep the daemon's tokens in,
// held open: every file is opened and created relative to the checked
// directory itself, so renaming or replacing the path afterwards cannot
// redirect the daemon. Build it with OpenTokenDir; close it with Close.
//
// Safe means: owned by the daemon's effective uid or by root, and not
// writable by its group or others (a sticky bit does not make it safe: a
// user who may create files can still plant a name the daemon has not
// created yet). Only the daemon's user and root can then add, remove or
// rename entries in it, so a token file found there was put there by one
// of them, and a name the daemon creates cannot be raced by anyone else.
// Root can do anything anyway.
type TokenDir struct {
	f    *os.File
	path string
	euid int
}

// OpenTokenDir opens and checks the directory at path (a symlink to it is
// followed: the directory reached is what is checked). When create is set
// and it does not exist, it is created with mode 0750 first (its parents
// 0750 too), and then checked like any other: an existing directory is
// never changed. The check is made on the opened directory (fstat), not on
// the path, so nothing can be swapped in between.
func OpenTokenDir(path string, create bool) (*TokenDir, error) {
	if path == "" || !filepath.IsAbs(path) {
		return nil, fmt.Errorf("token directory %q is not an absolute path", path)
	}
	if create {
		if err := os.MkdirAll(path, 0o750); err != nil {
			return nil, fmt.Errorf("create directory %s: %w", path, err)
		}
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open directory", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	d := &TokenDir{f: f, path: path, euid: os.Geteuid()}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	if err := d.checkDir(&st); err != nil {
		f.Close()
		return nil, err
	}
	return d, nil
}

// checkDir refuses a directory others own or may write, saying how to fix it.
func (d *TokenDir) checkDir(st *unix.Stat_t) error {
	mode := uint32(st.Mode) & 0o7777 // uint16 on some platforms
	var why string
	switch {
	case int(st.Uid) != d.euid && st.Uid != 0:
		why = "is owned by " + describeUID(st.Uid) + ", who could plant or replace token files in it"
	case mode&0o022 != 0:
		why = "is writable by its group or others, who could plant or replace token files in it"
	default:
		return nil
	}
	return fmt.Errorf("%w: directory %s %s (owner %s, mode %04o); it must be owned by the daemon's user (%s) "+
		"or root and writable by no one else. Under systemd use RuntimeDirectory=cwcreds with "+
		"RuntimeDirectoryMode=0750 (as systemd/cwcreds.service does); otherwise run "+
		"chown %d %s && chmod 0750 %s, or point CWCREDS_RUNTIME_DIR (or the client token file) at such a directory",
		ErrUnsafePath, d.path, why, describeUID(st.Uid), mode, describeUID(uint32(d.euid)), d.euid, d.path, d.path)
}

// describeUID renders uid with its user name when the user database has one.
func describeUID(uid uint32) string {
	s := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(s); err == nil && u.Username != "" {
		return "uid " + s + " (" + u.Username + ")"
	}
	return "uid " + s
}

// Path returns the directory's path as given to OpenTokenDir.
func (d *TokenDir) Path() string { return d.path }

// Close releases the directory.
func (d *TokenDir) Close() error { return d.f.Close() }

func (d *TokenDir) fd() int { return int(d.f.Fd()) }

// LoadToken returns the client token in the file name (a plain name in
// d), creating it with mode when it does not exist; created reports
// whether this call wrote it. See LoadClientToken.
func (d *TokenDir) LoadToken(name string, random io.Reader, mode fs.FileMode) (token string, created bool, err error) {
	if err := checkName(name); err != nil {
		return "", false, err
	}
	token, err = d.readToken(name)
	if !errors.Is(err, fs.ErrNotExist) {
		return token, false, err
	}
	return d.createToken(name, random, mode)
}

// ReplaceToken writes a fresh token to the file name in d, with mode,
// atomically replacing whatever is there (a file, or a symlink, which is
// replaced rather than followed): readers see the old file or the new one,
// never a partial one, and at no moment is the name free for another
// process to claim.
func (d *TokenDir) ReplaceToken(name string, random io.Reader, mode fs.FileMode) (string, error) {
	if err := checkName(name); err != nil {
		return "", err
	}
	token, tmp, err := d.writeTemp(name, random, mode)
	if err != nil {
		return "", err
	}
	if err := unix.Renameat(d.fd(), tmp, d.fd(), name); err != nil {
		_ = unix.Unlinkat(d.fd(), tmp, 0)
		return "", &fs.PathError{Op: "replace", Path: d.join(name), Err: err}
	}
	_ = d.f.Sync() // best effort: a lost entry means a new token at next start
	return token, nil
}

func checkName(name string) error {
	if name == "" || name == "." || name == ".." || filepath.Base(name) != name {
		return fmt.Errorf("token file name %q is not a plain file name", name)
	}
	return nil
}

func (d *TokenDir) join(name string) string { return filepath.Join(d.path, name) }

// readToken reads the token file name. It never follows a symlink
// (O_NOFOLLOW), never blocks (O_NONBLOCK: opening a FIFO for reading
// would wait for a writer), and accepts only a regular file with one link,
// owned by the daemon's user and writable by no one else; anything else is
// refused with ErrUnsafePath rather than trusted or replaced, since it may
// be an attacker's plant that an operator should see. A missing file is
// fs.ErrNotExist.
func (d *TokenDir) readToken(name string) (string, error) {
	path := d.join(name)
	fd, err := unix.Openat(d.fd(), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ELOOP):
		return "", fmt.Errorf("%w: %s is a symbolic link; a token file must be a regular file the daemon created, "+
			"and a link could make it serve another file (the upstream token, say) as a client token: "+
			"remove it (rm %s), find out who created it, and restart the daemon", ErrUnsafePath, path, path)
	case err != nil:
		return "", &fs.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	if err := d.checkFile(path, &st); err != nil {
		return "", err
	}
	b, err := io.ReadAll(io.LimitReader(f, maxClientTokenBytes+1))
	if err != nil {
		return "", fmt.Errorf("read token file %s: %w", path, err)
	}
	if err := checkClientToken(b); err != nil {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	return string(b), nil
}

// checkFile refuses a token file the daemon cannot have created.
func (d *TokenDir) checkFile(path string, st *unix.Stat_t) error {
	typ, mode := uint32(st.Mode)&unix.S_IFMT, uint32(st.Mode)&0o7777 // uint16 on some platforms
	var why string
	switch {
	case typ != unix.S_IFREG:
		why = "is not a regular file (" + fileType(typ) + ")"
	case int(st.Uid) != d.euid:
		why = "is owned by " + describeUID(st.Uid) + ", not by the daemon's user (" + describeUID(uint32(d.euid)) +
			"), so someone else wrote the token in it"
	case mode&0o022 != 0:
		why = fmt.Sprintf("has mode %04o, so its group or others can rewrite the token", mode)
	case uint64(st.Nlink) != 1:
		why = fmt.Sprintf("has %d hard links, so it is also another file (the upstream token, say)", st.Nlink)
	default:
		return nil
	}
	return fmt.Errorf("%w: %s %s; the daemon creates its token files itself (mode 0640 or 0600, owned by its user): "+
		"remove it (rm %s), find out who created it, and restart the daemon to get a new one", ErrUnsafePath, path, why, path)
}

// fileType names typ, the S_IFMT bits of a mode.
func fileType(typ uint32) string {
	switch typ {
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "a device"
	}
	return "type " + strconv.FormatUint(uint64(typ), 8)
}

// createToken creates name holding a fresh token. The token is written
// to a new, randomly named file in d (O_CREAT|O_EXCL|O_NOFOLLOW) and then
// moved to name only if name is still free (renameat2 RENAME_NOREPLACE, or
// link(2) where that is unsupported), so readers never see a partial file
// and a file created meanwhile (a second daemon starting) is never
// replaced: its token is returned instead.
func (d *TokenDir) createToken(name string, random io.Reader, mode fs.FileMode) (string, bool, error) {
	token, tmp, err := d.writeTemp(name, random, mode)
	if err != nil {
		return "", false, err
	}
	defer unix.Unlinkat(d.fd(), tmp, 0) // a no-op once renamed
	switch err := renameNoReplace(d.fd(), tmp, name); {
	case errors.Is(err, unix.EEXIST):
		tok, err := d.readToken(name)
		return tok, false, err
	case err != nil:
		return "", false, &fs.PathError{Op: "create", Path: d.join(name), Err: err}
	}
	_ = d.f.Sync() // best effort: a lost entry only means a new token next start
	return token, true, nil
}

// writeTemp writes a fresh token to a new file in d with mode and returns
// the token and the file's name.
func (d *TokenDir) writeTemp(name string, random io.Reader, mode fs.FileMode) (token, tmp string, err error) {
	raw := make([]byte, clientTokenRandomBytes)
	if _, err := io.ReadFull(random, raw); err != nil {
		return "", "", fmt.Errorf("generate token for %s: %w", d.join(name), err)
	}
	token = hex.EncodeToString(raw)
	tmp = "." + name + ".tmp-" + rand.Text()
	fd, err := unix.Openat(d.fd(), tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC,
		uint32(mode.Perm()))
	if err != nil {
		return "", "", &fs.PathError{Op: "create", Path: d.join(tmp), Err: err}
	}
	f := os.NewFile(uintptr(fd), d.join(tmp))
	defer func() {
		if err != nil {
			f.Close()
			_ = unix.Unlinkat(d.fd(), tmp, 0)
		}
	}()
	if err := f.Chmod(mode.Perm()); err != nil { // the umask may have cleared bits
		return "", "", err
	}
	if _, err := f.WriteString(token); err != nil {
		return "", "", err
	}
	if err := f.Sync(); err != nil {
		return "", "", err
	}
	if err := f.Close(); err != nil {
		return "", "", err
	}
	return token, tmp, nil
}

// linkThenUnlink links from as to in dirfd (failing with EEXIST when to
// exists) and removes from.
func linkThenUnlink(dirfd int, from, to string) error {
	if err := unix.Linkat(dirfd, from, dirfd, to, 0); err != nil {
		return err
	}
	return unix.Unlinkat(dirfd, from, 0)
}
