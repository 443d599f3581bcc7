"""`pipeline serve`: the review web app. Starlette, server-rendered Jinja2 pages, a little plain JavaScript
(static/app.js, no build step). Pages: `/` jobs, `/jobs/{job}` a job's gallery and review, `/providers`."""
