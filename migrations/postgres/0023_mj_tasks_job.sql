-- The seed's tasks by their job: the queue-full check counts a tenant's unfinished tasks from its
-- open jobs (instead of reading every task it ever made), and a job's end finds its task.
CREATE INDEX mj_tasks_job ON mj_tasks (job_id);
