"""ticket-sync: a binlog-tailing worker that keeps a Redis read model of helpdesk tickets."""

__version__ = "0.1.0"
