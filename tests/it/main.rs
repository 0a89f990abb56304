//! The integration tests, as one test binary (one link instead of one per file): each
//! module runs the real `dqpipe` binary against real components started on 127.0.0.1
//! (clamd, sshd, s3s-fs, moto, stunnel, HTTP listeners), with the helpers in `common`.

mod common;

mod adaptive;
mod batch;
mod breaking;
mod collisions;
mod copy;
mod docs;
mod filter;
mod ftp;
mod full_disk;
mod hostile;
mod inventory;
mod kube;
mod lease;
mod map;
mod moves;
mod names;
mod nats;
mod plan;
mod problems;
mod progress;
mod records;
mod reliability;
mod rescan;
mod s3;
mod sftp;
mod spec_errors;
mod spec_tests;
mod tls;
mod unpack;
