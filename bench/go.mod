module github.com/pelichan/pelichan/bench

go 1.25

replace github.com/pelichan/pelichan => ../

require (
	github.com/joncrlsn/dque v0.0.0-20211108142734-c2ef48c5192a
	github.com/klauspost/compress v1.20.4
	github.com/nsqio/go-diskqueue v1.1.0
	github.com/pelichan/pelichan v0.0.0-00010101000000-000000000000
	github.com/syndtr/goleveldb v1.0.0
)

require (
	github.com/gofrs/flock v0.7.1 // indirect
	github.com/golang/snappy v0.0.0-20180518054509-2e65f85255db // indirect
	github.com/pkg/errors v0.9.1 // indirect
	github.com/tidwall/gjson v1.10.2 // indirect
	github.com/tidwall/match v1.1.1 // indirect
	github.com/tidwall/pretty v1.2.0 // indirect
	github.com/tidwall/tinylru v1.1.0 // indirect
	github.com/tidwall/wal v1.2.1 // indirect
)
