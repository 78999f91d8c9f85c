package main

import (
	"flag"
	"os"
	"path/filepath"

	"go.uber.org/zap"
)

// The admin password of `gust up` and `gust gateway` is on by default:
// given by --admin-password-file, else by $GUST_ADMIN_PASSWORD, else the
// one kept in the data directory, generated on first start (secretSource).

// adminPasswordFlag registers --admin-password-file and returns the
// function that finds the password for a role with data directory
// dataDir.
func adminPasswordFlag(fs *flag.FlagSet) func(dataDir string, logger *zap.Logger) (string, error) {
	file := fs.String("admin-password-file", "", "file holding the admin password (user \"admin\"); default $GUST_ADMIN_PASSWORD, else DATA/"+adminPasswordFile+", generated on first start")
	return func(dataDir string, logger *zap.Logger) (string, error) {
		return adminPassword(*file, os.Getenv("GUST_ADMIN_PASSWORD"), dataDir, logger)
	}
}

// adminPassword returns the password read from file when it is given,
// else env when set, else the one in dataDir, generated when there is
// none yet.
func adminPassword(file, env, dataDir string, logger *zap.Logger) (string, error) {
	return secretSource{
		what: "admin password (user admin)", flag: "--admin-password-file", file: file,
		env: "GUST_ADMIN_PASSWORD", envValue: env, dataFile: filepath.Join(dataDir, adminPasswordFile),
	}.get(logger)
}
