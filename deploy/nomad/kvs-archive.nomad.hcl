# kvs-dl archiving a fleet every 15 minutes on Nomad: 8 allocations, each shard
# NOMAD_ALLOC_INDEX of 8 (--shard-count must equal count).
job "kvs-archive" {
  type = "batch"

  periodic {
    crons            = ["*/15 * * * *"]
    prohibit_overlap = true
  }

  group "shards" {
    count = 8

    restart {
      attempts = 2
      mode     = "fail"
    }

    task "kvs-dl" {
      driver = "docker"

      config {
        image = "ghcr.io/kvs-dl/kvs-dl:latest"
        args = [
          "--streams-from", "/local/streams.txt",
          "--shard-count", "8",
          "--start", "earliest",
          "--end", "now",
          "--segment", "1h",
          "-o", "s3://my-archive/{stream}/%Y/%m/%d/%H%M%S.mkv",
          "--state-dir", "/alloc/data/state",
          "--max-concurrent", "50",
          "--progress", "json",
        ]
      }

      template {
        destination = "local/streams.txt"
        data        = <<-EOT
          site1-cam01
          site1-cam02
          site2-cam01
        EOT
      }

      env {
        AWS_REGION = "eu-west-1"
      }

      resources {
        cpu    = 500
        memory = 512
      }
    }
  }
}
